"""The equalizer's HTTP server, on the standard library only (:mod:`http.server`).

Routes:

- ``GET /`` (or ``/index.html``): the page (:mod:`mechrec_recsys.equalizer.page`);
- ``GET /api/meta``: :meth:`EqualizerSession.meta` as JSON;
- ``POST /api/recommend``: a JSON body ``{"user": ..., "values": {"Sci-Fi": 3.0, ...},
  "k": 10, "method": "sae" | "probe"}`` (only ``user`` is required) answered with
  :meth:`EqualizerSession.recommend` as JSON.

Every error is a JSON object ``{"error": "..."}``: 400 for a bad request (invalid JSON, an
unknown field, genre, method or ``k``, a value that is not a number or is out of range), 404
for an unknown user or path, 405 for another HTTP method, 413 for an oversized body and 500
(message only, the traceback goes to the server's stderr) for a bug. No error ever answers
with a traceback page.

The server binds ``127.0.0.1`` by default: the page has no authentication, so only expose it
on other interfaces on a trusted network.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from mechrec_recsys.equalizer.errors import EqualizerInputError
from mechrec_recsys.equalizer.page import page_bytes
from mechrec_recsys.equalizer.session import EqualizerSession

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Largest request body accepted (a full equalizer is a few hundred bytes).
MAX_BODY_BYTES = 64 * 1024
#: Fields a recommend request may carry.
REQUEST_FIELDS: tuple[str, ...] = ("user", "values", "k", "method")
#: The page loads nothing from elsewhere and talks only to this server.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")


class EqualizerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the session its handlers answer from.

    ``session`` may be set after binding (the CLI binds the port first, so a port in use is
    reported before the model loads); until then API requests get 503.
    """

    daemon_threads = True
    # On POSIX, SO_REUSEADDR lets a restarted server bind while old connections linger in
    # TIME_WAIT, yet a second listener on the same port still fails; on Windows it would let
    # two servers share a port, so it stays off there.
    allow_reuse_address = sys.platform != "win32"

    def __init__(self, address: tuple[str, int], session: EqualizerSession | None = None,
                 *, verbose: bool = False) -> None:
        self.session = session
        self.verbose = verbose
        super().__init__(address, EqualizerHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a closed tab, a reload) is normal use: at most
        one quiet line, and only when verbose; anything else keeps its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # BrokenPipe, ConnectionReset/Aborted
            if self.verbose:
                print(f"{client_address[0]} closed the connection before the answer was sent "
                      f"({type(error).__name__})", file=sys.stderr)
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8765/``."""
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}/"


class _EqualizerServerV6(EqualizerServer):
    address_family = socket.AF_INET6


def make_server(session: EqualizerSession | None, host: str = DEFAULT_HOST,
                port: int = DEFAULT_PORT, *, verbose: bool = False) -> EqualizerServer:
    """Bind an equalizer server (``port=0``: any free port; read it from ``.server_address``).

    Raises:
        OSError: the address cannot be bound (``errno.EADDRINUSE``: the port is in use).
        ValueError: the port is not in ``0..65535``.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number in 0..65535, got {port!r}")
    cls = _EqualizerServerV6 if ":" in host else EqualizerServer
    return cls((host, port), session, verbose=verbose)


@contextmanager
def serve_in_background(session: EqualizerSession, host: str = DEFAULT_HOST, port: int = 0,
                        *, verbose: bool = False) -> Iterator[str]:
    """Serve ``session`` from a daemon thread (e.g. in a notebook or a test) and yield the page's
    URL without a trailing slash; the server is shut down and closed on exit."""
    server = make_server(session, host, port, verbose=verbose)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url.rstrip("/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class EqualizerHandler(BaseHTTPRequestHandler):
    """Answers the page and the JSON API (see the module docstring)."""

    server: EqualizerServer
    server_version = "mechrec-equalizer"
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds an idle keep-alive connection may hold its thread

    # ------------------------------------------------------------------------------ routing
    def do_GET(self) -> None:
        """Serve the page or the metadata."""
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, page_bytes(), "text/html; charset=utf-8",
                       {"Content-Security-Policy": PAGE_POLICY})
        elif path == "/api/meta":
            self._answer(lambda session: session.meta())
        elif path == "/api/recommend":
            self._error(HTTPStatus.METHOD_NOT_ALLOWED,
                        "use POST /api/recommend with a JSON body", {"Allow": "POST"})
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page {path!r}; the page is at /, the "
                        "API at GET /api/meta and POST /api/recommend")

    def do_HEAD(self) -> None:
        """Headers of what GET would answer, without the body."""
        self.do_GET()

    def do_POST(self) -> None:
        """Answer a recommendation request."""
        path = urlsplit(self.path).path
        if path != "/api/recommend":
            if path in ("/", "/index.html", "/api/meta"):
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"use GET {path}", {"Allow": "GET"})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such API {path!r}; POST requests go to "
                            "/api/recommend")
            return
        try:
            request = self._read_json()
        except EqualizerInputError as exc:
            self._error(HTTPStatus(exc.status), str(exc))
            return
        except _BodyTooLarge as exc:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc), close=True)
            return
        self._answer(lambda session: session.recommend(
            request["user"], request.get("values"), k=request.get("k"),
            method=request.get("method", "sae")))

    def do_PUT(self) -> None:
        """Refuse PUT requests with a JSON error."""
        self._method_not_allowed()

    def do_DELETE(self) -> None:
        """Refuse DELETE requests with a JSON error."""
        self._method_not_allowed()

    def do_PATCH(self) -> None:
        """Refuse PATCH requests with a JSON error."""
        self._method_not_allowed()

    def do_OPTIONS(self) -> None:
        """Refuse OPTIONS requests (no cross-origin use) with a JSON error."""
        self._method_not_allowed()

    # ------------------------------------------------------------------------------ helpers
    def _method_not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} is not supported: "
                    "use GET / , GET /api/meta or POST /api/recommend",
                    {"Allow": "GET, POST"})

    def _read_json(self) -> dict[str, Any]:
        """The request body as a checked JSON object."""
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise EqualizerInputError("the request has no Content-Length: send a JSON body")
        try:
            length = int(length_header)
        except ValueError:
            raise EqualizerInputError(f"bad Content-Length {length_header!r}") from None
        if length < 0:
            raise EqualizerInputError(f"bad Content-Length {length_header!r}")
        if length > MAX_BODY_BYTES:
            raise _BodyTooLarge(f"the request body has {length} bytes; at most "
                                f"{MAX_BODY_BYTES} are accepted")
        raw = self.rfile.read(length)
        if not raw.strip():
            raise EqualizerInputError(
                'empty request body: send JSON such as {"user": 1, "values": {"Sci-Fi": 2}}'
            )
        try:
            payload = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise EqualizerInputError("the request body is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise EqualizerInputError(
                f"invalid JSON in the request body: line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}"
            ) from None
        if not isinstance(payload, dict):
            raise EqualizerInputError(
                f"the request body must be a JSON object, got {type(payload).__name__}"
            )
        unknown = [key for key in payload if key not in REQUEST_FIELDS]
        if unknown:
            raise EqualizerInputError(
                f"unknown fields {unknown}; a request may carry {', '.join(REQUEST_FIELDS)}"
            )
        if "user" not in payload:
            raise EqualizerInputError('missing field "user": the raw id of the user to show')
        return payload

    def _answer(self, compute: Any) -> None:
        """Run ``compute(session)`` and send its JSON, or the error it raised."""
        session = self.server.session
        if session is None:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE,
                        "the model is still loading; try again in a moment")
            return
        try:
            result = compute(session)
        except EqualizerInputError as exc:
            self._error(HTTPStatus(exc.status), str(exc))
        except Exception as exc:  # a bug: answer in JSON, keep the traceback server-side
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"internal error ({type(exc).__name__}: {exc}); see the server's log")
        else:
            self._json(HTTPStatus.OK, result)

    def _json(self, status: HTTPStatus, payload: Any,
              headers: dict[str, str] | None = None, *, close: bool = False) -> None:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", headers, close=close)

    def _error(self, status: HTTPStatus, message: str,
               headers: dict[str, str] | None = None, *, close: bool = False) -> None:
        self._json(status, {"error": " ".join(message.split())}, headers, close=close)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict[str, str] | None = None, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Errors raised by :mod:`http.server` itself (malformed request line, header too
        long...) as JSON instead of its HTML page."""
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self._error(status, message or status.phrase, close=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests to stderr only when the server is verbose."""
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


class _BodyTooLarge(Exception):
    """The request body exceeds :data:`MAX_BODY_BYTES`."""


def _reject_constant(name: str) -> float:
    """JSON has no NaN/Infinity; Python's parser would accept them, so refuse them here."""
    raise EqualizerInputError(f"{name} is not a valid JSON number: send finite numbers")

