"""WooCommerce's app authorization: connecting a store from its own admin."""
