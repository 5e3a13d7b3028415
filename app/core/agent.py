"""The edge agent: probes a local model or server and this machine into an on-disk buffer, and
serves the buffer over HTTP(S) to the dashboard. Thread: build and close from one thread; the
probes, the recorder and the HTTP server run on their own.

Qt-free by construction (it is in app.core); ``probescope agent`` runs on a headless box.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from app.core.agent_buffer import DEFAULT_MAX_ITEMS, AgentBuffer
from app.core.agent_server import AgentHttpServer, ListenLimits, tls_context
from app.core.bus import Bus
from app.core.contract_agent import AgentModel
from app.core.recorder import Recorder
from app.core.versions import VersionError, inspect_onnx
from probes import Probe, ProbeError, ProbeOptions, open_probe

log = logging.getLogger(__name__)


class AgentError(Exception):
    """The agent cannot start as configured; the message says what to change."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    token: str
    buffer_path: Path
    host: str = "127.0.0.1"
    port: int = 7070
    model: Path | None = None
    upstream: str | None = None
    rate_hz: float = 10.0
    payload: Path | None = None
    # Requests drawn at random as captures (drift's sample); failures always travel.
    capture_rate: float = 0.05
    system_rate_hz: float = 1.0
    max_items: int = DEFAULT_MAX_ITEMS
    cert: Path | None = None
    key: Path | None = None
    limits: ListenLimits = field(default_factory=ListenLimits)  # what a client may hold


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise AgentError(f"--listen '{text}' must be HOST:PORT, e.g. 127.0.0.1:7070")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        if (config.model is None) == (config.upstream is None):
            raise AgentError("give exactly one of --model PATH or --upstream URI")
        if (config.cert is None) != (config.key is None):
            raise AgentError("TLS needs both --cert and --key")
        self.config = config
        self.bus = Bus()
        # Opened here so a bad path fails at once; the recorder opens its own connection.
        AgentBuffer(config.buffer_path, max_items=config.max_items).close()
        self.recorder = Recorder(
            self.bus, lambda: AgentBuffer(config.buffer_path,  # type: ignore[arg-type,return-value]
                                          max_items=config.max_items),
            flush_interval_s=0.1)
        options = ProbeOptions(rate_hz=config.rate_hz, payload=config.payload,
                               capture_rate=config.capture_rate)
        source = (f"onnx:{config.model}?provider=cpu" if config.model is not None
                  else str(config.upstream))
        try:
            self.probes: list[Probe] = [
                open_probe(source, self.bus, options),
                open_probe(f"system:?rate={config.system_rate_hz:g}", self.bus, options),
            ]
        except ProbeError as exc:
            raise AgentError(str(exc)) from exc
        tls = None
        if config.cert is not None and config.key is not None:
            try:
                tls = tls_context(config.cert, config.key)
            except (OSError, ValueError) as exc:
                raise AgentError(f"cannot load TLS certificate/key: {exc}") from exc
        elif not _is_loopback(config.host):
            log.warning("listening on %s without TLS: the token and samples cross the network "
                        "in clear; give --cert and --key", config.host)
        info = {"agent": "probescope", "sources": [p.endpoint for p in self.probes],
                "model_version": self.probes[0].info().get("model_version")}
        model = None
        if config.model is not None:  # named by its sha256, so a contract check on this
            try:                      # agent measures only the very file it asks about
                described = inspect_onnx(config.model)
            except VersionError as exc:
                raise AgentError(str(exc)) from exc
            model = AgentModel(Path(described.location), described.name,
                               described.sha256 or "")
        try:
            self.server = AgentHttpServer((config.host, config.port), token=config.token,
                                          buffer_path=config.buffer_path, info=info, tls=tls,
                                          model=model, limits=config.limits,
                                          status=self._status)
        except OSError as exc:
            raise AgentError(f"cannot listen on {config.host}:{config.port}: "
                             f"{exc.strerror or exc}") from exc
        self._thread: threading.Thread | None = None

    def _status(self) -> dict:
        """For /v1/info: whether each probe still runs. A probe that stopped on an error
        records nothing more, and the dashboard would otherwise see only a quiet agent."""
        return {"probes": [{"endpoint": p.endpoint, "running": p.alive, "state": str(p.state),
                            "last_error": p.last_error, "transient_errors": p.transient_errors}
                           for p in self.probes]}

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        scheme = "https" if self.server.tls is not None else "http"
        host, port = self.address
        return f"{scheme}://{host}:{port}"

    def start(self) -> None:
        self.recorder.start()
        for probe in self.probes:
            probe.start()
        self._thread = self.server.serve_in_thread()

    def close(self) -> None:
        for probe in self.probes:
            probe.stop()
        self.recorder.stop()  # flushes what the probes left on the bus
        self.server.shutdown()
        self.server.server_close()
