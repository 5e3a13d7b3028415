"""The agent's HTTP(S) face: serves buffered items as JSON to holders of the bearer token.
Thread: ``serve_forever`` on its own thread; one handler thread per client connection.

API (every request needs ``Authorization: Bearer TOKEN``, or it gets 401 and nothing else):

- ``GET /v1/info`` -> agent id, sources, buffer bounds
- ``GET /v1/items?after=SEQ&limit=N`` -> the items with sequence > SEQ, oldest first
- ``POST /v1/contract`` -> the contract measurements of the model file the agent runs
  (``app.core.contract_agent``); 409 when it runs none or another version
"""

from __future__ import annotations

import json
import logging
import sqlite3
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, urlsplit

from app.core.agent_auth import bearer_matches
from app.core.agent_buffer import AgentBuffer
from app.core.agent_buffer import BufferError as AgentBufferError
from app.core.contract_agent import CONTRACT_PATH, MAX_REQUEST_BYTES, AgentModel, AgentRefusal

log = logging.getLogger(__name__)

MAX_PAGE = 20_000
HANDLER_TIMEOUT_S = 30.0


class AgentHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # Reuse the port at once after a restart (kill -9 leaves it in TIME_WAIT).
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, token: str, buffer_path: Path,
                 info: dict, tls: ssl.SSLContext | None = None,
                 model: AgentModel | None = None) -> None:
        super().__init__(address, _Handler)
        self.token = token
        self.buffer_path = buffer_path
        self.info = {**info, "model": model.describe()} if model is not None else info
        self.model = model  # the model file the agent runs, measured by contract checks
        self.tls = tls
        if tls is not None:
            # The handshake runs in the handler thread, so a slow client cannot stall accept().
            self.socket = tls.wrap_socket(self.socket, server_side=True,
                                          do_handshake_on_connect=False)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="agent http", daemon=True)
        thread.start()
        return thread


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


class _Handler(BaseHTTPRequestHandler):
    server: AgentHttpServer
    protocol_version = "HTTP/1.1"  # keep-alive: the probe reuses one connection
    # Headers and body go out in separate writes; with Nagle on, the body waits ~40 ms for
    # the peer's delayed ACK.
    disable_nagle_algorithm = True
    timeout = HANDLER_TIMEOUT_S
    server_version = "probescope-agent"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()
        self._buffer: AgentBuffer | None = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._buffer is not None:
                self._buffer.close()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.debug("agent connection from %s ended: %s", self.client_address[0], exc)
            self.close_connection = True

    # Every method goes through the same gate; only GET does anything after it.
    def do_GET(self) -> None:
        if not self._authorised():
            return
        url = urlsplit(self.path)
        try:
            self._answer_get(url)
        except (AgentBufferError, sqlite3.Error) as exc:  # the buffer gone, locked or broken
            log.error("agent cannot read its buffer: %s", exc)
            self._json(503, {"error": f"the agent cannot read its buffer: {exc}"})

    def _answer_get(self, url: SplitResult) -> None:
        if url.path == "/v1/info":
            first, last = self._open_buffer().bounds()
            self._json(200, {**self.server.info, "first_seq": first, "last_seq": last,
                             "agent_id": self._open_buffer().agent_id})
        elif url.path == "/v1/items":
            self._items(parse_qs(url.query))
        else:
            self._json(404, {"error": f"no such resource {url.path}; try /v1/info"})

    def _other(self) -> None:
        if self._authorised():
            self.close_connection = True  # the body, if any, is not read
            self._json(405, {"error": "the agent only answers GET, and POST to "
                                      f"{CONTRACT_PATH}"})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other

    def do_POST(self) -> None:
        if urlsplit(self.path).path != CONTRACT_PATH:
            self._other()
            return
        if not self._authorised():
            return
        model = self.server.model
        length = self.headers.get("Content-Length", "")
        if model is None or not length.isdigit() or int(length) > MAX_REQUEST_BYTES:
            self.close_connection = True  # the body is not read
            if model is None:
                self._json(409, {"error": "this agent probes a server, not a model file of "
                                          "its own: there is nothing to measure here"})
            elif not length.isdigit():
                self._json(411, {"error": "a contract request needs a Content-Length"})
            else:
                self._json(413, {"error": f"a contract request is at most "
                                          f"{MAX_REQUEST_BYTES // 2**20} MiB"})
            return
        try:
            request = json.loads(self.rfile.read(int(length)))
        except ValueError:
            self._json(400, {"error": "the body is not JSON"})
            return
        try:
            self._json(200, model.measure(request))
        except AgentRefusal as exc:
            self._json(exc.status, {"error": str(exc)})

    def _authorised(self) -> bool:
        # A refused client's connection is closed, so an unread body cannot pose as the next
        # request on a keep-alive connection.
        if bearer_matches(self.headers.get("Authorization"), self.server.token):
            return True
        log.warning("agent refused a request from %s: missing or wrong bearer token",
                    self.client_address[0])
        self.close_connection = True
        self._json(401, {"error": "missing or wrong bearer token"},
                   {"WWW-Authenticate": 'Bearer realm="probescope-agent"'})
        return False

    def _items(self, query: dict[str, list[str]]) -> None:
        try:
            after = int(query.get("after", ["0"])[0])
            limit = min(MAX_PAGE, max(1, int(query.get("limit", ["5000"])[0])))
        except ValueError:
            self._json(400, {"error": "after and limit must be integers"})
            return
        self._json(200, self._open_buffer().page(after, limit).to_json())

    def _open_buffer(self) -> AgentBuffer:
        if self._buffer is None:
            self._buffer = AgentBuffer(self.server.buffer_path, readonly=True)
        return self._buffer

    def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # The request line only: headers (and so the token) are never logged.
        log.debug("%s %s", self.client_address[0], format % args)
