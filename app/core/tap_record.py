"""The tap's recording process: exchanges arrive as frames on stdin, are decoded into captures
and written to the workspace; after each commit it prints ``{"committed": N}`` (the captures
in the workspace so far), and at the end of stdin one JSON line of counts, then exits.
Thread: the process's main thread reads and decodes; the recorder writes on its own thread.

Why a process of its own: decoding JSON and writing SQLite in the proxy's process shared its
GIL with the proxy threads, and every answer that arrived during a decode waited for it
(docs/PERFORMANCE.md). Here the proxy only frames bytes onto a pipe. The frames are ours:
a length, a JSON header, the two bodies; nothing is unpickled.

    python -m app.core.tap_record --db PATH --upstream HOST:PORT < frames
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from app.core.bus import Bus
from app.core.domain import Batch
from app.core.recorder import Recorder
from app.core.store import Store
from app.core.tap_decode import Exchange, to_capture

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
NICENESS = 19  # traffic first: the recording may lag behind a busy machine, never drop


class FrameError(ValueError):
    """Bytes on the pipe that are not a frame written by ``encode_exchange``."""


def encode_exchange(x: Exchange) -> bytes:
    head = json.dumps([x.ts_ns, x.method, x.path, x.request_truncated, x.status,
                       x.response_truncated, x.latency_ms, x.error, x.timed_out, x.request_id,
                       len(x.request_body), len(x.response_body)]).encode()
    return b"".join((_LENGTH.pack(len(head)), head, x.request_body, x.response_body))


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise FrameError(f"the frame stops after {0 if data is None else len(data)} of {n} "
                         "bytes")
    return data


def read_exchanges(stream: BinaryIO) -> Iterator[Exchange]:
    """Exchanges from frames until the end of ``stream``."""
    while True:
        prefix = stream.read(_LENGTH.size)
        if not prefix:
            return
        if len(prefix) != _LENGTH.size:
            raise FrameError("the stream stops inside a frame's length")
        try:
            (ts_ns, method, path, req_cut, status, resp_cut, latency_ms, error, timed_out, rid,
             req_len, resp_len) = json.loads(_read_exactly(stream, _LENGTH.unpack(prefix)[0]))
        except (ValueError, TypeError) as exc:
            raise FrameError(f"bad frame header: {exc}") from None
        request_body = _read_exactly(stream, req_len)
        response_body = _read_exactly(stream, resp_len)
        yield Exchange(ts_ns, method, path, request_body, req_cut, status, response_body,
                       resp_cut, latency_ms, error, timed_out, rid)


def record(stream: BinaryIO, db: Path, upstream: str,
           progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Decode and record every exchange on ``stream``; the counts once it ends. "recorded"
    counts the captures committed to the workspace, "unwritten" those it refused (locked,
    full) even after the recorder's last tries. ``progress`` is told the captures committed
    so far after each commit (on the recorder's thread)."""
    bus = Bus()
    recorder = Recorder(bus, lambda: Store(db))
    counts = {"exchanges": 0, "recorded": 0, "not_inference": 0, "undecodable": 0}
    queued = 0
    if progress is not None:
        # After each commit, so a tap whose recording process dies (and so never prints its
        # last line) still knows how many of its calls are in the workspace.
        report = progress

        def committed(batch: Batch) -> None:
            if batch.captures:
                report(recorder.stats().committed_captures)

        recorder.subscribe(committed)
    recorder.start()
    try:
        for x in read_exchanges(stream):
            counts["exchanges"] += 1
            try:
                decoded = to_capture(x, upstream)
            except Exception:  # a decoding bug must not stop the recording of later calls
                log.exception("tap could not decode a %s %s exchange", x.method, x.path)
                counts["undecodable"] += 1
                continue
            if decoded is None:
                counts["not_inference"] += 1
                continue
            capture, samples = decoded
            bus.put_waiting([*samples, capture])  # a full bus: slower, nothing dropped
            queued += 1
    finally:
        recorder.stop()
    stats = recorder.stats()
    counts["recorded"] = stats.committed_captures
    counts["unwritten"] = queued - stats.committed_captures
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.core.tap_record",
                                description=__doc__.splitlines()[0])
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--upstream", required=True, help="HOST:PORT, to name the endpoints")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="probescope tap recorder: %(message)s")
    # Stopping is the end of stdin, when the tap has handed over its last exchange: a
    # Ctrl+C or SIGTERM sent to the tap's whole process group must not cut the recording.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    nice = getattr(os, "nice", None)  # Unix only
    if nice is not None:
        with contextlib.suppress(OSError):
            nice(NICENESS)
    def progress(committed: int) -> None:
        print(json.dumps({"committed": committed}), flush=True)

    try:
        counts = record(sys.stdin.buffer, args.db, args.upstream, progress)
    except FrameError as exc:
        log.error("stopped: %s", exc)
        return 2
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
