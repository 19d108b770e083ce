"""Reconciliation: recovered revenue, discount codes and messaging cost checked against the
platforms' own records.

- ``orders``: re-read recovered orders; refunds, cancellations (COD returned), unpaid orders
- ``messaging``: Meta's billed messages and cost per day against cartback's rate card, GST
- ``runs``: the weekly (or requested) run per store and its report
"""
