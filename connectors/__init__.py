"""Platform connectors: translate platform payloads into the common model and call platform APIs.

Connectors know nothing of Flask, RQ or the database session.
"""
