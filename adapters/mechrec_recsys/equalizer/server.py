"""The equalizer's HTTP server, on the standard library only (:mod:`http.server`).

Routes:

- ``GET /`` (or ``/index.html``): the page (:mod:`mechrec_recsys.equalizer.page`);
- ``GET /api/meta``: :meth:`EqualizerSession.meta` as JSON;
- ``POST /api/recommend``: a JSON body ``{"user": ..., "values": {"Sci-Fi": 3.0, ...},
  "k": 10, "method": "sae" | "probe"}`` (only ``user`` is required) answered with
  :meth:`EqualizerSession.recommend` as JSON.

Every error is a JSON object ``{"error": "..."}``: 400 for a bad request (invalid JSON, an
unknown or malformed field, genre, method or ``k``, a value that is not a number or is out of
range, a GET with a body), 403 for a foreign ``Host``/``Origin``, 404 for an unknown user or
path, 405 for another HTTP method, 413 for an oversized body, 503 while the model loads or
when every connection slot is taken, and 500
(message only, the traceback goes to the server's stderr) for a bug. No error ever answers
with a traceback page, and every error response closes the connection, so an unread request
body can never be taken for a second request.

Limits (loopback use by one person, hardened against careless and hostile clients):

- at most :data:`MAX_CONNECTIONS` connections are served at once, each by its own thread;
  further connections get an immediate 503 (``Retry-After: 1``) instead of a thread, and the
  listen backlog holds :data:`LISTEN_BACKLOG` connections waiting to be accepted;
- a client must send each complete request (headers and body) within
  :data:`REQUEST_TIMEOUT` seconds of the connection being ready for it, else the connection
  is closed without an answer (idle keep-alive connections too), so slow clients cannot hold
  threads;
- DNS rebinding: the ``Host`` header must name this server (``localhost``, ``127.0.0.1`` or
  ``[::1]`` with the bound port, or the bound address itself) and an ``Origin`` header, when
  present, the same; anything else is a 403;
- every response carries a Content-Security-Policy (the page may run only its own inline
  script and talk only to this server; JSON answers may load nothing), ``nosniff`` and
  ``frame-ancestors 'none'``.

The server binds ``127.0.0.1`` by default: the page has no authentication, so only expose it
on other interfaces on a trusted network.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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
#: Connections served at once (one thread each); more get an immediate 503.
MAX_CONNECTIONS = 64
#: Connections the kernel queues before they are accepted (``listen`` backlog).
LISTEN_BACKLOG = 128
#: Seconds a client has to send one complete request (and that an idle connection may stay).
REQUEST_TIMEOUT = 15.0
#: Host names that always mean this machine (with the bound port).
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
#: The page loads nothing from elsewhere and talks only to this server.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")
#: JSON answers load nothing and may not be framed.
API_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
_BUSY_BODY = b'{"error": "the server is busy (every connection slot is taken); try again"}'


class EqualizerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the session its handlers answer from.

    ``session`` may be set after binding (the CLI binds the port first, so a port in use is
    reported before the model loads); until then API requests get 503.
    """

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    # On POSIX, SO_REUSEADDR lets a restarted server bind while old connections linger in
    # TIME_WAIT, yet a second listener on the same port still fails; on Windows it would let
    # two servers share a port, so it stays off there.
    allow_reuse_address = sys.platform != "win32"

    def __init__(self, address: tuple[str, int], session: EqualizerSession | None = None,
                 *, verbose: bool = False, max_connections: int = MAX_CONNECTIONS,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        if max_connections < 1 or not request_timeout > 0:
            raise ValueError("max_connections must be >= 1 and request_timeout > 0, got "
                             f"{max_connections} and {request_timeout}")
        self.session = session
        self.verbose = verbose
        self.max_connections = int(max_connections)
        self.request_timeout = float(request_timeout)
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._deadlines: dict[socket.socket, float] = {}
        self._deadlines_lock = threading.Lock()
        super().__init__(address, EqualizerHandler)
        self.allowed_hosts = _allowed_hosts(str(self.server_address[0]),
                                            int(self.server_address[1]))

    # ---------------------------------------------------------------- connection limits
    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread if a slot is free, else answer 503 at once."""
        if not self._slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.unwatch(request)
            self._slots.release()

    def watch(self, connection: socket.socket) -> None:
        """Give ``connection`` :attr:`request_timeout` seconds to deliver its next request."""
        with self._deadlines_lock:
            self._deadlines[connection] = time.monotonic() + self.request_timeout

    def unwatch(self, connection: socket.socket) -> None:
        """The request on ``connection`` has arrived (or the connection is done)."""
        with self._deadlines_lock:
            self._deadlines.pop(connection, None)

    def service_actions(self) -> None:
        """Called by ``serve_forever`` about twice a second: cut connections whose request
        did not arrive in time (their handler's blocked read then returns)."""
        now = time.monotonic()
        with self._deadlines_lock:
            late = [conn for conn, deadline in self._deadlines.items() if deadline < now]
            for conn in late:
                del self._deadlines[conn]
        for conn in late:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

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
                port: int = DEFAULT_PORT, *, verbose: bool = False,
                max_connections: int = MAX_CONNECTIONS,
                request_timeout: float = REQUEST_TIMEOUT) -> EqualizerServer:
    """Bind an equalizer server (``port=0``: any free port; read it from ``.server_address``).

    ``max_connections`` and ``request_timeout`` are the limits of the module docstring.

    Raises:
        OSError: the address cannot be bound (``errno.EADDRINUSE``: the port is in use).
        ValueError: the port is not in ``0..65535``.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number in 0..65535, got {port!r}")
    cls = _EqualizerServerV6 if ":" in host else EqualizerServer
    return cls((host, port), session, verbose=verbose, max_connections=max_connections,
               request_timeout=request_timeout)


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
    timeout = REQUEST_TIMEOUT  # no single read waits longer (see also the server's deadline)

    def setup(self) -> None:
        """Per-connection socket timeout from the server's limit."""
        self.timeout = self.server.request_timeout
        super().setup()

    def handle_one_request(self) -> None:
        """Read and answer one request; the client has ``request_timeout`` seconds to send
        it (the server cuts the connection otherwise)."""
        self.server.watch(self.connection)
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError):
            self.close_connection = True
        finally:
            self.server.unwatch(self.connection)

    def parse_request(self) -> bool:
        """Parse the request line and headers, then refuse foreign hosts and origins (DNS
        rebinding) and, before any body is read, requests whose body cannot be delimited."""
        if not super().parse_request():
            return False
        problem = self._foreign_host()
        if problem:
            self._error(HTTPStatus.FORBIDDEN, problem)
            return False
        if "Transfer-Encoding" in self.headers:
            self._error(HTTPStatus.BAD_REQUEST, "Transfer-Encoding is not supported: send the "
                        "JSON body with a Content-Length")
            return False
        if self.command != "POST":  # the whole request has arrived (POST: once its body has)
            self.server.unwatch(self.connection)
        return True

    def _foreign_host(self) -> str | None:
        """Why the ``Host``/``Origin`` headers do not name this server, or ``None``."""
        allowed = self.server.allowed_hosts
        url = self.server.url
        host = self.headers.get("Host")
        if host is None:
            return f"the request has no Host header; open the page at {url}"
        if not _host_allowed(host.strip().lower(), allowed):
            return (f"Host {host!r} is not this server (DNS rebinding protection): open the "
                    f"page at {url}")
        origin = self.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin.strip().lower())
            if parts.scheme != "http" or not _host_allowed(parts.netloc, allowed):
                return (f"requests from origin {origin!r} are refused (only this server's own "
                        f"page, {url}, may call the API)")
        return None

    # ------------------------------------------------------------------------------ routing
    def do_GET(self) -> None:
        """Serve the page or the metadata."""
        path = urlsplit(self.path).path
        if self._has_body():
            self._error(HTTPStatus.BAD_REQUEST, f"{self.command} requests carry no body; "
                        "send the request again without one")
            return
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
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc))
            return
        except (TimeoutError, ConnectionError):
            self.close_connection = True
            return
        except Exception as exc:  # a bug: answer in JSON, keep the traceback server-side
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"internal error ({type(exc).__name__}); see the server's log")
            return
        self.server.unwatch(self.connection)
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
    def _has_body(self) -> bool:
        """Whether the request announces a body (a non-zero or malformed Content-Length)."""
        length = self.headers.get("Content-Length")
        return length is not None and length.strip() != "0"

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
        if len(raw) < length:
            raise ConnectionError("the client closed the connection before sending its body")
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
        except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4300 digits
            raise EqualizerInputError(
                f"the request body cannot be read as JSON ({exc}): send plain numbers and "
                "strings, such as {\"user\": 1, \"values\": {\"Sci-Fi\": 2}}"
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
               headers: dict[str, str] | None = None) -> None:
        """A JSON error; the connection is closed, since a rejected request's body may be
        unread (it must never be parsed as a next request)."""
        self._json(status, {"error": " ".join(message.split())}, headers, close=True)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict[str, str] | None = None, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        headers = dict(headers or {})
        headers.setdefault("Content-Security-Policy", API_POLICY)
        for name, value in headers.items():
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
        if not hasattr(self, "headers"):  # the request line itself was bad: no headers yet
            self.headers = http.client.HTTPMessage()
        self._error(status, message or status.phrase)

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests to stderr only when the server is verbose."""
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


def _allowed_hosts(host: str, port: int) -> frozenset[str]:
    """``Host`` values naming a server bound to ``host:port``: the loopback names, and the
    bound address itself when it is not a wildcard; ``"*ip"`` allows any IP literal (a server
    bound to every interface: an IP literal cannot be rebound by DNS)."""
    names = set(LOOPBACK_NAMES)
    if host in ("0.0.0.0", "::", ""):
        names.add("*ip")
    else:
        names.add(f"[{host.lower()}]" if ":" in host else host.lower())
    allowed = {f"{name}:{port}" for name in names if name != "*ip"}
    if port == 80:
        allowed |= {name for name in names if name != "*ip"}
    if "*ip" in names:
        allowed.add(f"*ip:{port}")
    return frozenset(allowed)


def _host_allowed(netloc: str, allowed: frozenset[str]) -> bool:
    """Whether a ``Host`` header / origin ``host[:port]`` is one of ``allowed``."""
    if netloc in allowed:
        return True
    if not any(name.startswith("*ip:") for name in allowed):
        return False
    host, sep, port = netloc.rpartition(":")
    if not sep or f"*ip:{port}" not in allowed:
        return False
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]")
                             else host)
    except ValueError:
        return False
    return True


def _refuse_busy(request: socket.socket) -> None:
    """Answer 503 on a connection that gets no thread (every slot taken)."""
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; "
            f"charset=utf-8\r\nContent-Length: {len(_BUSY_BODY)}\r\nRetry-After: 1\r\n"
            "Connection: close\r\n\r\n").encode()
    try:
        request.settimeout(1.0)
        request.sendall(head + _BUSY_BODY)
    except OSError:
        pass


class _BodyTooLarge(Exception):
    """The request body exceeds :data:`MAX_BODY_BYTES`."""


def _reject_constant(name: str) -> float:
    """JSON has no NaN/Infinity; Python's parser would accept them, so refuse them here."""
    raise EqualizerInputError(f"{name} is not a valid JSON number: send finite numbers")

