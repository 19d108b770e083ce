"""The ``cartback`` command line: ``main`` (database, web, worker, sweep, purge...), ``whatsapp``
(numbers and templates) and ``demo`` (``make demo``'s processes and journey).
"""
