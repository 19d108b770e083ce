"""``python -m app.cli``: the same as the ``cartback`` command."""

from app.cli.main import main

main()
