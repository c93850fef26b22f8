"""The equalizer server under careless and hostile clients (issue 12, items 6, 7, 8 and 12).

Raw sockets on loopback against a real server on the session's ml-100k GPTRec and SAE: every
rejected request closes its connection (no request smuggling), malformed fields are 400s,
connections are capped and slow clients timed out, foreign ``Host``/``Origin`` headers are
refused (DNS rebinding) and every answer carries a Content-Security-Policy.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mechrec_recsys.equalizer import EqualizerSession, make_server
from mechrec_recsys.equalizer.server import LISTEN_BACKLOG, MAX_CONNECTIONS, EqualizerServer
from mechrec_recsys.experiment import Experiment

from mechrec.saes import NormalizedSAE


@pytest.fixture(scope="module")
def session(paper_experiment: Experiment, paper_sae: NormalizedSAE) -> EqualizerSession:
    return EqualizerSession(paper_experiment, paper_sae, probes=False)


def _running(server: EqualizerServer) -> Iterator[EqualizerServer]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(session: EqualizerSession) -> Iterator[EqualizerServer]:
    yield from _running(make_server(session, "127.0.0.1", 0))


def _port(server: EqualizerServer) -> int:
    return int(server.server_address[1])


def exchange(server: EqualizerServer, raw: bytes, *, wait: float = 30.0) -> bytes:
    """Send ``raw`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=wait) as conn:
        conn.sendall(raw)
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def host(server: EqualizerServer) -> str:
    return f"127.0.0.1:{_port(server)}"


def post(server: EqualizerServer, path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host(server)}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def responses(raw: bytes) -> list[tuple[int, dict[str, str], Any]]:
    """Split a byte stream of HTTP/1.1 responses (each with a Content-Length)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        body, raw = rest[:length], rest[length:]
        out.append((status, headers, json.loads(body) if b"{" in body[:1] else body))
    return out


# ------------------------------------------------------------------ item 7: smuggling
def smuggled(server: EqualizerServer) -> bytes:
    return f"GET /api/meta HTTP/1.1\r\nHost: {host(server)}\r\n\r\n".encode()


@pytest.mark.parametrize("case", ["post-404", "post-405", "bad-length", "no-length",
                                  "get-with-body", "chunked"])
def test_rejected_request_closes_connection_so_its_body_is_never_a_request(
        server: EqualizerServer, case: str) -> None:
    inner = smuggled(server)
    h = host(server)
    raw = {
        "post-404": post(server, "/nope", inner),
        "post-405": post(server, "/api/meta", inner),
        "bad-length": (f"POST /api/recommend HTTP/1.1\r\nHost: {h}\r\nContent-Length: abc\r\n"
                       "\r\n").encode() + inner,
        "no-length": f"POST /api/recommend HTTP/1.1\r\nHost: {h}\r\n\r\n".encode() + inner,
        "get-with-body": (f"GET / HTTP/1.1\r\nHost: {h}\r\nContent-Length: {len(inner)}\r\n"
                          "\r\n").encode() + inner,
        "chunked": (f"POST /api/recommend HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: "
                    f"chunked\r\n\r\n{len(inner):x}\r\n").encode() + inner + b"\r\n0\r\n\r\n",
    }[case]
    answers = responses(exchange(server, raw))
    assert len(answers) == 1, [a[0] for a in answers]  # the body was not served as a request
    status, headers, payload = answers[0]
    assert status in (400, 404, 405)
    assert headers["connection"] == "close"
    assert set(payload) == {"error"}


def test_good_requests_still_share_a_keep_alive_connection(server: EqualizerServer) -> None:
    raw = smuggled(server) + smuggled(server).replace(b"\r\n\r\n", b"\r\nConnection: close"
                                                       b"\r\n\r\n")
    answers = responses(exchange(server, raw))
    assert [a[0] for a in answers] == [200, 200]


# ------------------------------------------------------------------ item 8: malformed fields
@pytest.mark.parametrize("body", [
    b'{"user": ' + b"1" * 5000 + b"}",
    b'{"user": "' + b"1" * 5000 + b'"}',
    b'{"user": 1, "k": ' + b"9" * 5000 + b"}",
    b'{"user": 1, "values": {"Action": ' + b"9" * 5000 + b"}}",
    b"[" * 30_000 + b"]" * 30_000,
])
def test_malformed_field_is_a_json_400_not_a_dropped_connection(
        server: EqualizerServer, body: bytes) -> None:
    answers = responses(exchange(server, post(server, "/api/recommend", body)))
    assert len(answers) == 1
    status, _, payload = answers[0]
    assert status == 400, payload
    assert "Traceback" not in payload["error"]


# ------------------------------------------------------------------ item 12: Host / Origin
@pytest.mark.parametrize("headers", [
    "Host: evil.example:{port}\r\n",
    "Host: 127.0.0.1:1\r\n",
    "Host: localhost.evil.example:{port}\r\n",
    "Host: 127.0.0.1:{port}\r\nOrigin: http://evil.example:{port}\r\n",
    "Host: 127.0.0.1:{port}\r\nOrigin: null\r\n",
])
def test_foreign_host_or_origin_is_refused(server: EqualizerServer, headers: str) -> None:
    head = headers.format(port=_port(server))
    for raw in (f"GET /api/meta HTTP/1.1\r\n{head}\r\n".encode(),
                f"POST /api/recommend HTTP/1.1\r\n{head}Content-Length: 11\r\n\r\n"
                '{"user": 1}'.encode()):
        (status, _, payload), = responses(exchange(server, raw))
        assert status == 403
        assert "127.0.0.1" in payload["error"]


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]", "LocalHost"])
def test_loopback_host_and_own_origin_are_served(server: EqualizerServer, name: str) -> None:
    port = _port(server)
    raw = (f"GET /api/meta HTTP/1.1\r\nHost: {name}:{port}\r\nOrigin: http://{name}:{port}"
           "\r\nConnection: close\r\n\r\n").encode()
    (status, _, _), = responses(exchange(server, raw))
    assert status == 200


def test_every_answer_has_a_content_security_policy(server: EqualizerServer) -> None:
    port = _port(server)
    for path in ("/", "/api/meta", "/nope"):
        raw = f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
        (_, headers, _), = responses(exchange(server, raw.encode()))
        assert "default-src 'none'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path


# ------------------------------------------------------------------ items 6 and 12: limits
def test_backlog_and_connection_cap_are_set(server: EqualizerServer) -> None:
    assert server.request_queue_size == LISTEN_BACKLOG >= 128
    assert server.max_connections == MAX_CONNECTIONS
    assert 1 <= MAX_CONNECTIONS <= 256


def test_connections_over_the_cap_get_503_and_slots_come_back(
        session: EqualizerSession) -> None:
    for srv in _running(make_server(session, "127.0.0.1", 0, max_connections=2)):
        port = _port(srv)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        try:
            time.sleep(0.3)  # let the server accept both (they now hold its two slots)
            raw = f"GET /api/meta HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            (status, headers, payload), = responses(exchange(srv, raw))
            assert status == 503 and headers["retry-after"] == "1"
            assert "busy" in payload["error"]
        finally:
            for conn in idle:
                conn.close()
        for _ in range(100):  # the freed slots serve again
            (status, _, _), = responses(exchange(srv, raw))
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200


def test_slow_client_is_disconnected_and_frees_its_thread(session: EqualizerSession) -> None:
    for srv in _running(make_server(session, "127.0.0.1", 0, request_timeout=0.5)):
        port = _port(srv)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(f"GET /api/meta HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
            closed = False
            for _ in range(600):  # a header byte every 0.1 s, never finishing the request
                readable, _, _ = select.select([conn], [], [], 0.1)
                if readable:
                    closed = True
                    break
                try:
                    conn.sendall(b"X")
                except OSError:
                    closed = True
                    break
            assert closed, "the server kept a trickling client's connection open"
        raw = f"GET /api/meta HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        (status, _, _), = responses(exchange(srv, raw))
        assert status == 200
