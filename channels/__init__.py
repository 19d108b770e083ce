"""Messaging channels without the database, as ``connectors`` is for store platforms.

``channels.transport`` is the protocol every channel implements (``MessageTransport``) and the
message and outcome types the engine hands it; ``channels.whatsapp`` is the WhatsApp Cloud API:
the Graph client, the cloud transport, Meta's error policy, webhook parsing, the templates as
data and the shared send throttle. Nothing here imports ``sequences``, ``app`` or Flask, nor
touches a table: what a channel reports, the engine records.
"""
