"""bench (f)'s lean server for the Graph fake checks sends as the fake does, logs exactly the sends
it accepted, keeps connections alive and answers no sooner than its latency."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import graph_load
from bench.environment import PYTHON, REPO
from bench.graph_server import NUMBERS, GraphServer
from channels.whatsapp.templates import TEMPLATE_TEXT_ONLY

APP_SECRET = "lean-graph-test-secret"
LATENCY_S = 0.05


def template_send(to: str) -> dict[str, Any]:
    """A send of the text-only recovery template, as the cloud transport builds it."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": TEMPLATE_TEXT_ONLY,
            "language": {"code": "en", "policy": "deterministic"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": text}
                        for text in ("Asha", "Cotton Kurta", "₹1,499.00", "Claim ₹100 off!")
                    ],
                },
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [{"type": "text", "text": "token-1"}],
                },
            ],
        },
        "biz_opaque_callback_data": "message-1",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphServer]:
    started = GraphServer.start(tmp_path_factory.mktemp("graph"), APP_SECRET, LATENCY_S, PYTHON, REPO)
    try:
        yield started
    finally:
        started.stop()


def post(client: httpx.Client, server: GraphServer, number: int, token: int, body: Any) -> httpx.Response:
    return client.post(
        f"{server.url}/{NUMBERS[number].phone_number_id}/messages",
        json=body,
        headers={"Authorization": f"Bearer {NUMBERS[token].access_token}"},
    )


def test_an_accepted_send_is_answered_after_the_latency_and_logged_with_its_number(
    server: GraphServer,
) -> None:
    before = len(server.accepted())
    with httpx.Client() as client:
        began, sent_at = time.monotonic(), time.time()
        response = post(client, server, 3, 3, template_send("919812345678"))
        waited = time.monotonic() - began

    assert response.status_code == 200
    answer = response.json()
    assert answer["contacts"] == [{"input": "919812345678", "wa_id": "919812345678"}]
    assert answer["messages"][0]["id"].startswith("wamid.")
    assert waited >= LATENCY_S
    [logged] = server.accepted()[before:]
    assert logged.phone_number_id == NUMBERS[3].phone_number_id
    assert sent_at - 1 <= logged.accepted_at <= sent_at + waited


@pytest.mark.parametrize(
    ("number", "token", "change", "status", "code"),
    [
        pytest.param(2, 3, {}, 400, 100, id="another store's token"),
        pytest.param(2, 2, {"to": "not a phone"}, 400, 100, id="bad recipient"),
        pytest.param(
            2,
            2,
            {"template": {"name": "no_such_template", "language": {"code": "en"}}},
            404,
            132001,
            id="unknown template",
        ),
        pytest.param(
            2,
            2,
            {"template": {"name": TEMPLATE_TEXT_ONLY, "language": {"code": "en"}, "components": []}},
            400,
            132000,
            id="parameters missing",
        ),
    ],
)
def test_a_send_the_fake_refuses_is_refused_with_its_code_and_not_logged(
    server: GraphServer, number: int, token: int, change: dict[str, Any], status: int, code: int
) -> None:
    before = len(server.accepted())
    with httpx.Client() as client:
        response = post(client, server, number, token, template_send("919812345678") | change)

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert server.accepted()[before:] == []


def test_a_token_it_never_issued_is_refused_and_not_logged(server: GraphServer) -> None:
    before = len(server.accepted())
    with httpx.Client() as client:
        response = client.post(
            f"{server.url}/{NUMBERS[0].phone_number_id}/messages",
            json=template_send("919812345678"),
            headers={"Authorization": "Bearer EAAG-never-issued"},
        )

    assert (response.status_code, response.json()["error"]["code"]) == (401, 190)
    assert server.accepted()[before:] == []


def test_a_connection_carries_many_requests(server: GraphServer) -> None:
    with httpx.Client() as client:
        first = post(client, server, 1, 1, template_send("919812345671"))
        second = post(client, server, 1, 1, template_send("919812345672"))
        pool = client._transport._pool  # type: ignore[attr-defined]
        connections = len(pool.connections)

    assert (first.status_code, second.status_code) == (200, 200)
    assert "connection" not in second.headers
    assert connections == 1


def test_the_capacity_load_replays_a_sample_and_every_send_is_logged(
    server: GraphServer, tmp_path: Path
) -> None:
    with httpx.Client() as client:
        assert post(client, server, 4, 4, template_send("919812345674")).status_code == 200
    sample = server.sample()
    assert sample is not None
    body_file = tmp_path / "body.json"
    body_file.write_text(json.dumps(sample.body))
    before = len(server.accepted())
    printed = io.StringIO()

    with redirect_stdout(printed):
        graph_load.main(
            [
                *("--url", sample.url, "--token", sample.access_token, "--body-file", str(body_file)),
                *("--requests", "40", "--concurrency", "8"),
            ]
        )

    load = json.loads(printed.getvalue())
    assert (load["requests"], load["accepted"]) == (40, 40)
    assert len(server.accepted()) - before == 40


def test_a_body_without_content_length_is_refused_and_the_connection_closed(server: GraphServer) -> None:
    before = len(server.accepted())
    body = json.dumps(template_send("919812345678")).encode()
    request = (
        (
            f"POST /v25.0/{NUMBERS[0].phone_number_id}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {NUMBERS[0].access_token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    host, port = server.origin.removeprefix("http://").split(":")

    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in answer
    assert server.accepted()[before:] == []
