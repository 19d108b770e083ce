"""The WhatsApp Cloud API as a channel: HTTP, Meta's rules and payloads, no database.

What the engine does with WhatsApp (accounts, health, inbound replies, confirmations) lives in
``sequences.whatsapp``; this package only speaks to Meta and reads what Meta sends.
"""
