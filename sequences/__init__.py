"""The product core: the recovery engine and everything it keeps. Never imports Flask.

``config``, ``db``, ``models``, ``runtime`` and ``queue`` are the infrastructure every room uses;
``engine`` is the sequence itself; ``clicks`` the recovery link; ``stores`` the platform
plumbing; ``whatsapp`` the engine's side of the WhatsApp channel; ``merchant`` the dashboard
and settings; ``privacy`` erasure and privacy requests; ``jobs`` the RQ entry points, imported
only by workers.
"""
