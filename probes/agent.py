"""Pulls a ProbeScope agent's buffered samples: ``agent+http://HOST:PORT`` (``agent+https://``).

Resumes from the last sequence number the workspace *committed*: each page pulled goes on the
bus followed by a ``probescope.agent_seq`` marker sample, and the recorder writes a page and its
marker in one transaction (a page's items are put contiguously, marker last). On start the
probe reads the last marker written (``Store.last_value``), so a dropped connection, a dashboard
kill -9 or a restart loses nothing and duplicates nothing.

A sequence number means something only in the agent buffer that gave it: after the marker goes
a ``probescope.agent_buffer`` sample naming that buffer (``buffer_key`` of its id), so a
dashboard restarted after the agent's buffer was replaced pulls the new one from its start,
however far it has numbered. Kept as a sample, beside the marker, since samples are what the
workspace commits with a page (its schema has no place for it otherwise).

The token is a secret, so it never goes in the URI: it comes from ``$PROBESCOPE_AGENT_TOKEN``,
from another variable named by ``?token_env=NAME``, or from a file named by
``?token_file=PATH`` (a path is not a secret; the file should be chmod 600). Other parameters:
``interval`` (seconds between pulls, default 0.5), ``page`` (items per pull, default 5000),
``ca`` (a CA bundle to verify the agent's TLS certificate), ``timeout_s``.

Thread: ``run`` on the probe thread; it only talks to the bus (and reads the store once).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from pathlib import Path

import httpx

from app.core.agent_auth import TOKEN_ENV, TokenError, read_token
from app.core.agent_buffer import capture_from_json
from app.core.bus import Bus
from app.core.domain import NEWEST_NS, Capture, EndpointUri, Metric, Sample, StoreError
from probes.base import (
    EndpointState,
    Probe,
    ProbeError,
    ProbeOptions,
    first_line,
    float_param,
    int_param,
    register,
)
from probes.http_common import loads, split_http_target
from probes.http_deadline import deadline, deadline_transport

log = logging.getLogger(__name__)

SEQ_METRIC = "probescope.agent_seq"
BUFFER_METRIC = "probescope.agent_buffer"  # which agent buffer the marker's sequence is of
MAX_BACKOFF_S = 5.0
REFUSED_LOG_EVERY_S = 60.0
# How often /v1/info is read again: it says whether the agent's own probes still measure,
# and an agent whose model server died keeps answering pulls with nothing new in them.
INFO_EVERY_S = 10.0
# An agent clock further off than this from this machine's is said: its samples are placed by
# its clock, so an hour off puts them outside the live view, and incidents at the wrong time.
CLOCK_TOLERANCE_S = 5.0
_TROUBLED = frozenset({"down", "degraded", "stopped"})
# A page of 5,000 items with small captures is a few MiB; past this it is not our agent.
DEFAULT_PAGE_MB = 64.0


def buffer_key(agent_id: str) -> float:
    """An agent buffer's id as a sample value: 52 bits of its SHA-256, held exactly by a
    float (a value holds 53)."""
    digest = hashlib.sha256(agent_id.encode("utf-8")).digest()
    return float(int.from_bytes(digest[:8], "big") >> 12)


def committed_cursor(workspace: Path | None, endpoint: str) -> int:
    """The last agent sequence the workspace committed for this endpoint (0 if none)."""
    return committed_place(workspace, endpoint)[0]


def committed_place(workspace: Path | None, endpoint: str) -> tuple[int, float | None]:
    """The last agent sequence the workspace committed for this endpoint (0 if none), and the
    ``buffer_key`` of the agent buffer it is a sequence of (None if not recorded: none
    committed, or committed by a dashboard that did not record it)."""
    if workspace is None:
        return 0, None
    # Imported here: this module loads with every probe, the edge agent's included, and the
    # store brings sqlite-utils and pandas.
    from app.core.store import Store

    try:
        store = Store(workspace, readonly=True)
    except StoreError:
        return 0, None  # no workspace yet: nothing committed
    try:
        if "samples" not in store.db.table_names():
            return 0, None  # created but not yet migrated: nothing committed
        value = store.last_value(endpoint, SEQ_METRIC)
        key = store.last_value(endpoint, BUFFER_METRIC)
    finally:
        store.close()
    return (0 if value is None else int(value)), key


@register("agent+http")
class AgentProbe(Probe):
    params = frozenset({"interval", "page", "timeout_s", "ca", "token_env", "token_file",
                        "max_mb"})

    def __init__(self, uri: EndpointUri, bus: Bus, options: ProbeOptions) -> None:
        super().__init__(uri, bus, options)
        # An agent is named by where it is. How this dashboard gets the token or the CA, or
        # how often it pulls, are settings: as part of the name, a token moved to a file made
        # a new endpoint that pulled the agent's whole buffer again.
        self.endpoint = f"{uri.scheme}:{uri.target}"
        example = f"{uri.scheme}://HOST:PORT"
        # The shared check refuses user:password@ (httpx would send it as Basic auth in
        # place of our token, in clear) besides a missing host or a bad port.
        self.base_url, path = split_http_target(uri, example)
        if path:
            raise ProbeError(f"'{uri.scheme}://…{path}' should look like {example}")
        self.max_bytes = int(float_param(uri, "max_mb", DEFAULT_PAGE_MB, positive=True)
                             * 2**20)
        try:
            self._token = read_token(uri.param("token_file"),
                                     uri.param("token_env", TOKEN_ENV) or TOKEN_ENV,
                                     file_hint="?token_file=PATH in the URI")
        except TokenError as exc:
            raise ProbeError(f"{self.endpoint}: {exc}") from None
        self.interval_s = float_param(uri, "interval", 0.5, positive=True)
        self.page = int_param(uri, "page", 5000) or 5000
        self.timeout_s = float_param(uri, "timeout_s", 5.0, positive=True)
        ca = uri.param("ca")
        try:
            self.verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=ca)
                                                  if ca else True)
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(f"cannot read the CA bundle {ca}: {exc}") from None
        self.workspace = getattr(options, "workspace", None)
        if self.workspace is None:
            log.warning("%s: no workspace, so pulls start from the agent's oldest item",
                        self.endpoint)
        self.cursor = 0
        self.pulled = 0
        # The model requests the agent recorded (a latency each, failed ones included), as
        # pulled in this run. ``requests`` counts this dashboard's answered pulls: `watch`
        # reads it to tell whether the agent answered at all.
        self.model_requests = 0
        self.refused = 0  # items of pages that could not be read, counted as dropped
        self._next_refused_log = 0.0
        self.agent_info: dict = {}
        self._next_info_s = 0.0  # when /v1/info is read again (monotonic)
        self.clock_offset_s: float | None = None  # the agent's clock less this machine's
        # (endpoint, state, last error) of the agent's own probes, read from /v1/info once
        # each time it is fetched, not at every pull or window refresh.
        self.agent_probes: list[tuple[str, str, str]] = []
        self._told_clock = False
        self._told_trouble: frozenset[tuple[str, str]] = frozenset()  # logged agent probe states
        # ``buffer_key`` of the agent buffer the cursor is in, to notice a new one: read
        # from the workspace with the cursor, so a restarted dashboard notices it too.
        self._buffer_key: float | None = None

    def info(self) -> dict[str, str]:
        out = {"kind": self.scheme, "agent": self.base_url}
        if self.agent_info.get("model_version"):
            out["model_version"] = str(self.agent_info["model_version"])
        if self.agent_info.get("sources"):
            out["sources"] = ", ".join(map(str, self.agent_info["sources"]))
        states = [f"{endpoint}: {state}" for endpoint, state, _ in self.agent_probes]
        if states:
            out["agent probes"] = "; ".join(states)
        if self.clock_offset_s is not None:
            out["agent clock"] = f"{self.clock_offset_s:+.1f} s from this machine's"
        out["model requests"] = f"{self.model_requests:,}"
        return out

    def run(self, stop: threading.Event) -> None:
        self.cursor, self._buffer_key = committed_place(self.workspace, self.endpoint)
        failures = 0
        with self.client() as client:
            while not stop.is_set():
                if self.paused:
                    self.wait_if_paused()
                    continue
                try:
                    more = self.pull_once(client)
                    failures = 0
                except ProbeError as exc:
                    failures += 1
                    self._down(str(exc))
                    more = False
                except Exception as exc:
                    # pull_once reads pages defensively; anything else is a bug of ours, and
                    # one odd page must not end the pulling for the rest of the run.
                    failures += 1
                    self._down(self.internal_error(exc, f"reading a page from {self.base_url}"))
                    more = False
                if not more:
                    stop.wait(min(MAX_BACKOFF_S, self.interval_s * 2 ** min(failures, 4))
                              if failures else self.interval_s)

    def client(self) -> httpx.Client:
        """A client for this agent whose every exchange ends within ``timeout_s``, however
        slowly the agent trickles its answer."""
        return httpx.Client(base_url=self.base_url, timeout=self.timeout_s,
                            headers={"Authorization": f"Bearer {self._token}"},
                            transport=deadline_transport(httpx.Limits(max_connections=2),
                                                         verify=self.verify))

    def _down(self, message: str) -> None:
        if self.last_error != message:
            log.warning("%s: %s", self.endpoint, message)
        if self._told_down is None:  # the outage's start, for "back up after N s"
            self._told_down, self._down_since = message, time.monotonic()
        self.last_error = message
        self.errors += 1
        self.state = EndpointState.DOWN

    def _get(self, client: httpx.Client, path: str, params: dict | None = None
             ) -> tuple[int, bytes]:
        """Status and body, read in chunks and refused past ``max_mb``: whatever answers on
        that port must not be able to fill the dashboard's memory."""
        with deadline(self.timeout_s), client.stream("GET", path, params=params) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise ProbeError(f"agent at {self.base_url} sent more than "
                                     f"{self.max_bytes / 2**20:g} MiB for one page; lower "
                                     "?page= or raise ?max_mb=")
            return response.status_code, bytes(body)

    def _tls_hint(self, exc: httpx.TransportError) -> str:
        """What to change, for the two TLS mistakes whose errors do not say it."""
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return ("; the agent's certificate is not one this machine trusts: give its CA "
                    "(for a self-signed one, the certificate itself) with ?ca=PATH")
        if (self.scheme == "agent+http" and isinstance(exc, httpx.RemoteProtocolError)
                and "disconnected" in text):
            return "; if the agent serves HTTPS (started with --cert), use agent+https://"
        return ""

    def pull_once(self, client: httpx.Client) -> bool:
        """Fetch one page after the cursor and put it on the bus; True if more is waiting."""
        try:
            status, body = self._get(client, "/v1/items",
                                     {"after": self.cursor, "limit": self.page})
        except httpx.TimeoutException:
            raise ProbeError(f"agent at {self.base_url} did not answer within "
                             f"{self.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise ProbeError(f"agent at {self.base_url} is unreachable: "
                             f"{type(exc).__name__}: {exc}{self._tls_hint(exc)}") from None
        if status == 401:
            raise ProbeError(f"agent at {self.base_url} refused the token; check "
                             f"${TOKEN_ENV} or ?token_file= against the agent's --token-file")
        if status != 200:
            raise ProbeError(f"agent at {self.base_url} answered HTTP {status}"
                             + _agent_reason(body))
        # Counted once answered: a run whose every pull was refused has got no answer, and
        # `watch` says so and fails.
        self.requests += 1
        try:
            page = loads(body)
            items, refused = self._items(page)
            next_seq, last_seq = _seq(page["next_seq"]), _seq(page["last_seq"])
            first_seq = _seq(page["first_seq"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProbeError(f"agent at {self.base_url} sent a page that cannot be read: "
                             f"{first_line(exc)}") from None
        key = buffer_key(str(page.get("agent_id", "")))
        replaced = self._buffer_key is not None and key != self._buffer_key
        self._buffer_key = key
        if last_seq < self.cursor or replaced:
            # The agent's buffer was deleted or replaced: its numbering started again.
            log.warning("%s: the agent's buffer is new (sequence %d, was at %d); pulling from "
                        "its start", self.endpoint, last_seq, self.cursor)
            self.cursor = 0
            return True
        self.mark_answered()  # an outage said in the log has ended: say for how long
        error = None
        if refused:
            self.refused += len(refused)
            error = (f"agent at {self.base_url} sent {len(refused)} items that cannot be read, "
                     f"counted as dropped (first: {refused[0]})")
            # An agent that keeps sending them would otherwise fill the log, a line a pull.
            if time.monotonic() >= self._next_refused_log:
                self._next_refused_log = time.monotonic() + REFUSED_LOG_EVERY_S
                log.warning("%s: %s; %d refused so far", self.endpoint, error, self.refused)
        if time.monotonic() >= self._next_info_s:
            self._learn_info(client)
        trouble = self._agent_trouble()
        self._tell_trouble(trouble)
        # Pulls work, but what the agent measures may not: say so rather than a calm UP over
        # an empty plot. Its model gone (the probe of it down or stopped) is this endpoint
        # down, as the model's own probe would say on this machine: the window then stops
        # showing the last rate, and the live down rule opens its incident. State and error
        # are set once, here: set to UP first and corrected after, the window (and a test)
        # could read a troubled agent as up between the two.
        self.state = (EndpointState.UP if not trouble
                      else EndpointState.DOWN if self._agent_model_down()
                      else EndpointState.DEGRADED)
        self.last_error = "; ".join(filter(None, (trouble, error))) or None
        if not items and not refused:
            return False
        out: list[Sample | Capture] = []
        lost = first_seq - self.cursor - 1 if first_seq > self.cursor + 1 else 0
        if lost:
            log.warning("%s: the agent trimmed %d items before they were pulled",
                        self.endpoint, lost)
        dropped = lost + len(refused)
        if dropped:
            out.append(Sample(self.endpoint, time.time_ns(), Metric.DROPPED, float(dropped)))
        seqs = [seq for seq, _ in items]
        out += [item for _, item in items]
        now_ns = time.time_ns()
        # The buffer's key after the marker: put together, they are committed together,
        # but should a recorder's batch end between them, a restart then finds a marker with
        # the key before it, takes the buffer for new and pulls it again from its start
        # (duplicates), rather than the key without its marker and resuming a new buffer
        # at an old buffer's place (losses).
        out += [Sample(self.endpoint, now_ns, SEQ_METRIC, float(next_seq)),
                Sample(self.endpoint, now_ns, BUFFER_METRIC, key)]
        accepted = self.bus.put_many(out)
        done = accepted - (1 if dropped else 0)  # page items (and marks) that got on the bus
        if done >= len(items) + 1:
            self.cursor = next_seq
        else:
            # A full bus took only a prefix: resume after it; the next page's marker covers it.
            self.cursor = seqs[done - 1] if done > 0 else self.cursor
            self.state = EndpointState.DEGRADED
        got = items[:max(0, min(done, len(items)))]
        self.pulled += len(got)
        self.model_requests += sum(1 for _, item in got if isinstance(item, Sample)
                                   and item.metric == Metric.LATENCY_MS)
        return next_seq < last_seq

    def _learn_info(self, client: httpx.Client) -> None:
        """What the agent probes and how its probes fare (for ``info()`` and the state);
        best effort, the pull goes on without it."""
        self._next_info_s = time.monotonic() + INFO_EVERY_S
        try:
            sent_ns = time.time_ns()
            status, body = self._get(client, "/v1/info")
            got_ns = time.time_ns()
            if status == 200:
                self.agent_info = dict(loads(body))
                self.agent_probes = _probe_states(self.agent_info.get("probes"))
                now_ns = self.agent_info.get("now_ns")
                if isinstance(now_ns, int) and not isinstance(now_ns, bool):
                    self.clock_offset_s = (now_ns - (sent_ns + got_ns) / 2) / 1e9
        except (httpx.HTTPError, ProbeError, ValueError, TypeError) as exc:
            log.debug("%s: no agent info: %s", self.endpoint, exc)

    def _tell_trouble(self, trouble: str | None) -> None:
        """One log line when the agent's probes start to fail or change how, one when they
        all measure again; not one a pull."""
        now = frozenset((e, s) for e, s, _ in self.agent_probes if s in _TROUBLED)
        if now == self._told_trouble:
            return
        if trouble:
            log.warning("%s: %s", self.endpoint, trouble)
        else:
            log.warning("%s: the agent's probes measure again", self.endpoint)
        self._told_trouble = now

    def _agent_model_down(self) -> bool:
        """Whether the agent's probe of its model (not of its machine) is down or stopped."""
        return any(s in ("down", "stopped") and not e.startswith("system:")
                   for e, s, _ in self.agent_probes)

    def _agent_trouble(self) -> str | None:
        """What is wrong with the agent's own probes or its clock, for ``last_error``; None if
        nothing."""
        said = []
        bad = [(e, s, err) for e, s, err in self.agent_probes if s in _TROUBLED]
        if bad:
            endpoint, state, error = bad[0]
            text = f"the agent's probe of {endpoint} is {state}" + (f": {error}" if error else "")
            said.append(text + (f" (and {len(bad) - 1} more of its probes)" if len(bad) > 1
                                else ""))
        skew = self._clock_trouble()
        if skew:
            said.append(skew)
        return "; ".join(said) or None

    def _clock_trouble(self) -> str | None:
        """The agent's clock, if it is off from this machine's by more than the tolerance;
        logged once."""
        offset = self.clock_offset_s
        if offset is None or abs(offset) <= CLOCK_TOLERANCE_S:
            return None
        way = "behind" if offset < 0 else "ahead of"
        text = (f"the agent's clock is {abs(offset):,.0f} s {way} this machine's: its samples "
                "are placed by its clock (set the edge box's clock, e.g. with NTP)")
        if not self._told_clock:
            self._told_clock = True
            log.warning("%s: %s", self.endpoint, text)
        return text

    def _items(self, page: dict) -> tuple[list[tuple[int, Sample | Capture]], list[str]]:
        """The page's items in sequence order, and why each item refused was refused. An item
        that cannot be read is refused alone (the rest of the page goes on): a timestamp
        outside int64 epoch nanoseconds, in particular, would stop the workspace's writer."""
        e = self.endpoint
        items: list[tuple[int, Sample | Capture]] = []
        refused: list[str] = []
        for row in page["samples"]:
            try:
                seq, ts, metric, value = row
                # SQLite keeps NaN as NULL, so a NaN the agent measured comes back as None.
                items.append((_seq(seq), Sample(e, _ts_ns(ts), str(metric),
                                                float("nan") if value is None else float(value))))
            except (ValueError, TypeError, OverflowError) as exc:
                refused.append(f"sample {_brief(row)}: {first_line(exc)}")
        for c in page["captures"]:
            try:
                if not isinstance(c, dict):
                    raise TypeError("not an object")
                _ts_ns(c.get("ts_ns"))
                items.append((_seq(c.get("seq")), capture_from_json(e, c)))
            except (ValueError, TypeError, KeyError, OverflowError) as exc:
                # capture_from_json raises ValueError for bad base64 and tensors too.
                refused.append(f"capture {_brief(c)}: {first_line(exc)}")
        items.sort(key=lambda pair: pair[0])
        return items, refused


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} {value!r} is not a number")
    if isinstance(value, float) and not value.is_integer():  # inf and nan included
        raise ValueError(f"{what} {value!r} is not a whole number")
    number = int(value)
    if not 0 <= number <= NEWEST_NS:  # past SQLite's integers: not from a working agent
        raise ValueError(f"{what} {number} is outside 0 .. 2**63-1")
    return number


def _seq(value: object) -> int:
    return _whole(value, "sequence number")


def _ts_ns(value: object) -> int:
    return _whole(value, "timestamp")


def _probe_states(probes: object) -> list[tuple[str, str, str]]:
    """(endpoint, state, last error) of each of an agent's own probes, from its /v1/info;
    text from the network, so cut short and kept to one line."""
    out = []
    for p in probes if isinstance(probes, list) else ():
        if not isinstance(p, dict):
            continue
        state = _one_line(p.get("state")) or "unknown"
        if p.get("running") is False:
            state = "stopped"
        out.append((_one_line(p.get("endpoint")) or "?", state, _one_line(p.get("last_error"))))
    return out


def _agent_reason(body: bytes) -> str:
    """The reason an agent gave with a refusal (its JSON ``error``) as ": reason"; "" if it
    gave none."""
    try:
        reason = loads(body).get("error")
    except (ValueError, TypeError, AttributeError):
        return ""
    return f": {_one_line(reason)}" if reason else ""


def _one_line(value: object, limit: int = 200) -> str:
    """Text an agent sent, for a status line: one line, at most ``limit`` characters."""
    if value is None:
        return ""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


@register("agent+https")
class AgentHttpsProbe(AgentProbe):
    """The same over TLS; its own class so its kind reads agent+https (one class registered
    under both schemes took the last one for both)."""
