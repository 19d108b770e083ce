"""Store plumbing: everything that talks to a store's platform through ``connectors``.

``installs`` writes a store's arrival and departure (its row's one get-or-create, an install's
token, an uninstall) and ``connections`` a WooCommerce connection under way; ``access`` calls a
platform with a live token (refreshed before expiry); ``deliveries`` stores webhook
deliveries, through ``spool`` (each web process's own file) on SQLite; ``sync`` keeps webhooks
registered and polls what deliveries missed; ``reconcile`` re-reads recovered orders;
``line_images``, ``discount_cleanup`` and ``opt_out_sync`` are the smaller platform chores.
"""
