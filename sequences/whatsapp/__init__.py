"""The engine's side of the WhatsApp channel: what needs the database.

``accounts`` connects and checks a merchant's number; ``health`` pauses and resumes sending;
``template_push`` submits our templates to Meta; ``confirmations`` answers STOP and START;
``inbound`` applies Meta's webhook events, routed by type to ``statuses`` (sent, delivered,
read, failed), ``replies`` (shopper messages and preferences) and ``account_events`` (template
and number updates). The adapters that need no database are in ``channels.whatsapp``;
``app.webhooks.whatsapp`` is the HTTP side. Nothing here imports Flask.
"""
