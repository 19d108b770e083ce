"""Alerts and incidents: is something wrong with a store (or the service) right now, and who
should hear about it.

- ``rules``: each condition, read cheaply every minute (checkouts silent, failures, rates,
  the number's quality, templates, access, the platform, reconciliation; the service's backlog)
- ``incidents``: one incident per condition while it holds, closed after it stays clear
- ``notify``: the merchant's email and the operator's Alertmanager-compatible webhook
"""
