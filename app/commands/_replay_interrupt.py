"""Ctrl+C during ``replay``: the replay runs on a thread of its own, so a first Ctrl+C stops it
after the batch under way (keeping the finished versions) and a second ends the process at
once. Apart from the command's run: it is about signals and threads, not about replays.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from app.core.replay import ReplayResult


def replay_interruptibly(work: Callable[[Callable[[], bool]], ReplayResult]) -> ReplayResult:
    """``work(cancelled)`` on a thread of its own, the main thread waiting on it. Python runs
    a signal handler on the main thread between bytecodes only: were the replay there, a
    Ctrl+C would wait for the inference call under way (seconds, for a big model) and two
    would merge into one. Here the first sets ``cancelled`` (the replay stops after the batch
    under way, keeping the versions it finished) and says so at once; the second ends the
    process at once (``_leave_now``), saving nothing, while the thread is still at work."""
    interrupted = threading.Event()

    def on_sigint(*_: object) -> None:
        if interrupted.is_set():  # asked twice: stop now, whatever is under way
            raise KeyboardInterrupt
        interrupted.set()
        print(("\n" if sys.stderr.isatty() else "")  # off the progress line
              + "probescope: stopping after the batch under way; Ctrl+C again stops at "
              "once, saving nothing", file=sys.stderr, flush=True)

    done: list[ReplayResult] = []
    failed: list[BaseException] = []
    # Not Thread.join: a KeyboardInterrupt inside it marks a running thread as ended
    # (bpo-45274), and the exit below must know that the thread is still at work.
    ended = threading.Event()

    def body() -> None:
        try:
            done.append(work(interrupted.is_set))
        except BaseException as exc:  # handed to the main thread, which reports it
            failed.append(exc)
        finally:
            ended.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        threading.Thread(target=body, name="replay", daemon=True).start()
        while not ended.wait(0.2):  # short waits: the handler runs between them anywhere
            pass
    except KeyboardInterrupt:
        if not ended.is_set():
            _leave_now()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if failed:
        raise failed[0]
    return done[0]


def _leave_now() -> NoReturn:
    """Exit 130 at once, the replay thread still inside an inference call. An ordinary exit
    would run onnxruntime's static destructors under that call, which aborts the process
    (SIGABRT, "terminate called without an active exception"). Nothing is lost: the
    workspace is written only once the replay has ended."""
    with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to tell
        print("probescope: stopped; nothing saved", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(130)
