"""The sequence engine: when a cart is abandoned, what is sent when, and when it all stops.

``policy`` times steps as pure functions; ``steps`` writes the ledger; ``tracking`` applies store
events to carts and ``intake`` drains the stored deliveries to it; ``dispatch`` claims the carts
whose moment (``Cart.next_wake_at``, the schedule) has come and ``batches`` advances them a
batch at a time; ``sending`` is one cart's tick, every case (decide under the locks, send,
record); ``scheduling`` enqueues jobs after a commit; ``sweep`` is the safety net and the
periodic chores; ``consent`` is STOP and START; ``messages`` renders a step; ``timeline`` is the cart's
merchant-readable history; ``cart_states`` is the one state machine (every status change goes
through it); ``attribution`` finds the cart an order recovers.
"""
