"""The recovery engine: timing policy, RQ jobs, messages, transports, links. Never imports Flask."""
