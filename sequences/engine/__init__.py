"""The sequence engine: when a cart is abandoned, what is sent when, and when it all stops.

``policy`` times steps as pure functions; ``steps`` writes the ledger; ``tracking`` applies store
events to carts; ``sending`` is the alarm's tick (decide under the cart lock, send, record);
``scheduling`` keeps Redis wake-ups in step with the database; ``sweep`` rebuilds Redis from the
database; ``consent`` is STOP and START; ``messages`` renders a step; ``timeline`` is the cart's
merchant-readable history; ``cart_states`` is the one state machine (every status change goes
through it); ``attribution`` finds the cart an order recovers.
"""
