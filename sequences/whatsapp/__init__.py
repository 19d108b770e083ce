"""The WhatsApp Cloud API channel: templates, the cloud transport, inbound webhooks, health.

Everything here runs without Flask (the worker uses it); ``app.webhooks.whatsapp`` is the
HTTP side of inbound deliveries.
"""
