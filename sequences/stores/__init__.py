"""Store plumbing: everything that talks to a store's platform through ``connectors``.

``access`` calls a platform with a live token (refreshed before expiry); ``deliveries`` stores
webhook deliveries; ``sync`` keeps webhooks registered and polls what deliveries missed;
``reconcile`` re-reads recovered orders; ``line_images``, ``discount_cleanup`` and
``opt_out_sync`` are the smaller platform chores.
"""
