"""What the merchant sees and sets: the dashboard, its kept figures, lists and settings.

``dashboard`` answers a period's figures from the ``rollups`` kept as carts change; ``lists``
searches carts and contacts; ``store_settings`` is the merchant's recovery settings as data;
``settings_changes`` validates, saves and audits a change, answers its history and re-plans open
carts; ``preview`` renders a step and sends the merchant a test message; ``sign_in`` issues and
redeems the merchant's one-time sign-in links.
"""
