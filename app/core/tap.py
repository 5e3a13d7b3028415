"""The recording reverse proxy behind ``probescope tap``. Thread: the proxy serves each client
connection on its own thread; a shipper thread frames the finished exchanges onto a pipe to the
recording process (app/core/tap_record.py), which decodes them into captures and writes them.

Requests are forwarded with their bytes unchanged (only ``Host`` and hop-by-hop headers are
rewritten, and a chunked request body is sent with a Content-Length); responses go back to the
client exactly as the upstream sent them, byte for byte, status line and headers included.
Recording happens off the hot path, in another process: the proxy only copies bytes, keeps a
prefix of each answer (``max_record_bytes``, the rest streams through) and the request body
(whole, up to ``ClientLimits.max_body_bytes``: a request resent on a fresh connection needs
it, a chunked one goes on with a Content-Length) and queues each finished exchange; stopping
lets the calls in flight finish first, so a call a client has seen answered is recorded even
if the tap is stopped right after. A longer body is forwarded whole and recorded cut, with
``truncated=True``. HTTP/1.1 only: no HTTP/2 and no protocol upgrades (WebSocket), which the
three JSON protocols do not use.

Why not httpx upstream: httpx re-parses and re-encodes every message and costs ~0.3 ms a
request in this process; the byte-copying proxy in tap_proxy.py, a thread per client
connection on blocking sockets with a kept-alive upstream connection each, keeps the tap's own
cost small next to a 1 ms model (see docs/PERFORMANCE.md).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import queue
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.core.store import Store
from app.core.tap_decode import Exchange, route
from app.core.tap_proxy import ClientLimits, ProxyServer, ProxySettings
from app.core.tap_record import encode_exchange

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORD_BYTES = 1 << 20
SHIP_INTERVAL_S = 0.02
RECORDING_DRAIN_S = 120  # at stop, how long the recording process may take to catch up


class TapError(Exception):
    """The tap cannot start as configured; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TapError(f"--upstream '{url}' must be http://HOST:PORT or https://HOST:PORT")
        if parts.username or parts.password:  # refused without echoing them back
            raise TapError(f"--upstream must not carry a user or password "
                           f"({parts.scheme}://…@{parts.hostname}); clients send their own "
                           "credentials through the tap")
        if parts.path not in ("", "/") or parts.query:
            raise TapError(f"--upstream '{url}' must not have a path; clients keep theirs")
        try:
            port = parts.port  # urllib checks the range and the digits only when asked
        except ValueError:
            raise TapError(f"--upstream '{url}' has no valid port; ports are 1 to 65535") from None
        return cls(parts.hostname, port or (443 if parts.scheme == "https" else 80),
                   parts.scheme == "https")

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Tap:
    def __init__(self, upstream_url: str, db_path: str | Path, *, host: str = "127.0.0.1",
                 port: int = 9000, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 timeout_s: float = 30.0, limits: ClientLimits | None = None) -> None:
        self.upstream = Upstream.parse(upstream_url)
        if not _is_loopback(host):
            # The tap copies production requests and answers into a file, and its clients are
            # the model server's own clients, which cannot present a ProbeScope token. So it
            # never listens beyond this machine; run it beside the clients instead.
            raise TapError(f"the tap listens on loopback only (got {host}); run it on the "
                           "clients' machine with --listen 127.0.0.1:PORT")
        self.host, self.port = host, port
        self.max_record_bytes = max_record_bytes
        self.timeout_s = timeout_s
        self.db_path = Path(db_path)
        Store(self.db_path).close()  # fail now, on the caller's thread, if the path is bad
        self.forwarded = 0  # requests of any kind
        self.calls = 0  # of those, inference calls: each is recorded or counted as not
        self.recorded = 0  # captures committed to the workspace (known at close)
        self.not_recorded = 0  # inference calls forwarded but not in the workspace (at close)
        self._committed = 0  # the recording process's last "committed" line
        self._final: dict | None = None  # its last line of counts, when it ended normally
        self._count_lock = threading.Lock()
        self._handed_over = False  # the end marker is queued: nothing more gets recorded
        self._exchanges: queue.SimpleQueue[Exchange | None] = queue.SimpleQueue()
        self._settings = ProxySettings(
            self.upstream.host, self.upstream.port,
            ssl.create_default_context() if self.upstream.tls else None, timeout_s,
            max_record_bytes, self._record, limits or ClientLimits())
        self._proxy: ProxyServer | None = None
        self._shipper: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._recording: subprocess.Popen[bytes] | None = None

    # -- lifecycle (controlling thread) ---------------------------------------------------

    def start(self) -> None:
        try:
            self._proxy = ProxyServer(self.host, self.port, self._settings)
        except OSError as exc:
            raise TapError(f"cannot listen on {self.host}:{self.port}: "
                           f"{exc.strerror or exc}") from None
        root = str(Path(__file__).resolve().parents[2])  # where the app package lives
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self._recording = subprocess.Popen(
            [sys.executable, "-m", "app.core.tap_record", "--db", str(self.db_path),
             "--upstream", self.upstream.hostport],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._shipper = threading.Thread(target=self._ship, name="tap shipper", daemon=True)
        self._shipper.start()
        self._reader = threading.Thread(target=self._read_counts, name="tap counts",
                                        daemon=True)
        self._reader.start()
        self._proxy.start()

    @property
    def address(self) -> tuple[str, int]:
        assert self._proxy is not None
        return self._proxy.address

    def close(self) -> None:
        # The proxy first (in-flight calls finish and are handed over), so no exchange
        # arrives after the shipper's end marker; then the recording process drains.
        if self._proxy is not None:
            self._proxy.close()
        with self._count_lock:
            self._handed_over = True
        self._exchanges.put(None)
        if self._shipper is not None:
            self._shipper.join(30)
        proc = self._recording
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the shipper's end marker never got there: end it here
        try:
            proc.wait(timeout=RECORDING_DRAIN_S)
        except subprocess.TimeoutExpired:
            log.error("the tap's recording process did not finish within %d s; stopped it",
                      RECORDING_DRAIN_S)
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(10)
        if self._final is not None:
            self.recorded = int(self._final["recorded"])
        else:
            # Killed, or crashed: its last "committed" line is what reached the workspace.
            log.error("the tap's recording process ended with code %s; %d captures had "
                      "been committed", proc.returncode, self._committed)
            self.recorded = self._committed
        # Whatever did not reach the workspace, whichever way it was lost: still waiting
        # when the stop's grace ran out, never shipped to a dead process, in the pipe or the
        # recorder's queue when it died, refused by the workspace (locked, full), or not
        # decodable. Counting each way apart left some out.
        self.not_recorded = max(0, self.calls - self.recorded)

    def _read_counts(self) -> None:
        """Thread: the recording process's progress lines, then its last line of counts."""
        proc = self._recording
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if not isinstance(doc, dict):
                continue
            if "committed" in doc:
                self._committed = int(doc["committed"])
            elif "recorded" in doc:
                self._final = doc

    # -- shipper thread -------------------------------------------------------------------

    def _ship(self) -> None:
        # Wake on a clock, not per request: a wake-up per exchange costs the proxy a context
        # switch on every request. One write per wake-up carries every exchange since.
        proc = self._recording
        assert proc is not None and proc.stdin is not None
        pipe, alive, done = proc.stdin, True, False
        while not done:
            time.sleep(SHIP_INTERVAL_S)
            frames = []
            while True:
                try:
                    x = self._exchanges.get_nowait()
                except queue.Empty:
                    break
                if x is None:
                    done = True
                    break
                frames.append(encode_exchange(x))
            if not frames:
                continue
            if alive:  # once dead, the frames are dropped: close() counts what is missing
                try:
                    pipe.write(b"".join(frames))
                    pipe.flush()
                except OSError as exc:
                    alive = False
                    log.error("the tap's recording process stopped (%s): calls are still "
                              "forwarded but no longer recorded", exc)
        with contextlib.suppress(OSError):
            pipe.close()

    # -- proxy threads --------------------------------------------------------------------

    def _record(self, exchange: Exchange) -> None:
        inference = route(exchange.method, exchange.path, "") is not None
        with self._count_lock:  # client threads finish calls concurrently
            self.forwarded += 1
            self.calls += inference
            if self._handed_over:
                # A call still in flight when the stop's grace ran out: the recording
                # process has had its last exchange. Not recorded, and said at exit.
                return
        self._exchanges.put(exchange)
