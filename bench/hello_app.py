"""The baseline: a bare Flask app answering "hello", served by gunicorn exactly like cartback.

Whatever this costs (gunicorn, WSGI, Flask routing, a connection per request with sync
workers, wrk itself on the same CPUs) is the floor; the ingest figure is reported against it.
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "hello"
