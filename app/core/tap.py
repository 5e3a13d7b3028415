"""The recording reverse proxy behind ``probescope tap``. Thread: the proxy serves each client
connection on its own thread; a decoder thread turns exchanges into captures for the bus and
recorder.

Requests are forwarded with their bytes unchanged (only ``Host`` and hop-by-hop headers are
rewritten, and a chunked request body is sent with a Content-Length); responses go back to the
client exactly as the upstream sent them, byte for byte, status line and headers included.
Recording happens after the response is on its way: the hot path only copies bytes and keeps a
prefix of each body (``max_record_bytes``); a longer body is forwarded whole and recorded cut,
with ``truncated=True``. HTTP/1.1 only: no HTTP/2 and no protocol upgrades (WebSocket), which
the three JSON protocols do not use.

Why not httpx upstream: httpx re-parses and re-encodes every message and costs ~0.3 ms a
request in this process; the byte-copying proxy in tap_proxy.py, a thread per client
connection on blocking sockets with a kept-alive upstream connection each, keeps the tap's own
cost small next to a 1 ms model (see docs/PERFORMANCE.md).
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.core.bus import Bus
from app.core.recorder import Recorder
from app.core.store import Store
from app.core.tap_decode import Exchange, to_capture
from app.core.tap_proxy import ProxyServer, ProxySettings

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORD_BYTES = 1 << 20
DECODE_INTERVAL_S = 0.02


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
        if parts.path not in ("", "/") or parts.query:
            raise TapError(f"--upstream '{url}' must not have a path; clients keep theirs")
        return cls(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
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
                 timeout_s: float = 30.0) -> None:
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
        self.bus = Bus()
        self.recorder = Recorder(self.bus, lambda: Store(self.db_path))
        self.forwarded = 0
        self.recorded = 0
        self._exchanges: queue.SimpleQueue[Exchange | None] = queue.SimpleQueue()
        self._settings = ProxySettings(
            self.upstream.host, self.upstream.port,
            ssl.create_default_context() if self.upstream.tls else None, timeout_s,
            max_record_bytes, self._record)
        self._proxy: ProxyServer | None = None
        self._decoder: threading.Thread | None = None

    # -- lifecycle (controlling thread) ---------------------------------------------------

    def start(self) -> None:
        try:
            self._proxy = ProxyServer(self.host, self.port, self._settings)
        except OSError as exc:
            raise TapError(f"cannot listen on {self.host}:{self.port}: "
                           f"{exc.strerror or exc}") from None
        self.recorder.start()
        self._decoder = threading.Thread(target=self._decode, name="tap decoder", daemon=True)
        self._decoder.start()
        self._proxy.start()

    @property
    def address(self) -> tuple[str, int]:
        assert self._proxy is not None
        return self._proxy.address

    def close(self) -> None:
        # The proxy first (in-flight calls finish and are handed over), so no exchange
        # arrives after the decoder's end marker.
        if self._proxy is not None:
            self._proxy.close()
        self._exchanges.put(None)
        if self._decoder is not None:
            self._decoder.join(10)
        self.recorder.stop()

    # -- decoder thread -------------------------------------------------------------------

    def _decode(self) -> None:
        # Wake on a clock, not per request: a wake-up per exchange costs the proxy thread a
        # context switch and GIL hand-over on every request (measured: about +0.1 ms a call
        # on two busy cores). Between items the GIL is yielded, so a request that arrives
        # meanwhile waits for at most one item's decoding, not a whole batch.
        done = False
        while not done:
            time.sleep(DECODE_INTERVAL_S)
            while True:
                try:
                    x = self._exchanges.get_nowait()
                except queue.Empty:
                    break
                if x is None:
                    done = True
                    break
                self._decode_one(x)
                time.sleep(0)

    def _decode_one(self, x: Exchange) -> None:
        try:
            decoded = to_capture(x, self.upstream.hostport)
        except Exception:  # a decoding bug must not stop the recording of later requests
            log.exception("tap could not decode a %s %s exchange", x.method, x.path)
            return
        if decoded is not None:
            capture, samples = decoded
            self.bus.put_many([*samples, capture])
            self.recorded += 1

    # -- proxy threads --------------------------------------------------------------------

    def _record(self, exchange: Exchange) -> None:
        self.forwarded += 1
        self._exchanges.put(exchange)
