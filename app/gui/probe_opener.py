"""Opening a probe off the GUI thread: a server's first answers can take seconds, and the
window must stay responsive meanwhile. Thread: call from the GUI thread; ``done`` runs there.

Shared by the attach dialog and by attaching a workspace's endpoints again when it reopens.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)


class _Opened(QObject):
    """Carries a worker's result to the GUI thread (queued, by the object's affinity)."""

    done = Signal(object, object)  # the opened probe or None, the error or None


def discard(probe: object) -> None:
    """Close a probe that was opened but will not be attached."""
    close = getattr(probe, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # an abandoned probe: nothing more to tell anyone
            log.debug("closing an abandoned probe failed", exc_info=True)


def open_in_background(uri: str, opener: Callable[[str], object],
                       user_errors: tuple[type[BaseException], ...], owner: QObject,
                       done: Callable[[object | None, str | None], None]) -> None:
    """Run ``opener(uri)`` on a worker thread, then ``done(probe, None)`` or ``done(None,
    error)`` on the GUI thread. ``owner`` (the window, not a dialog) outlives the attempt, so
    an abandoned attempt's answer still arrives and can close the probe it opened."""
    carrier = _Opened(owner)

    def deliver(probe: object | None, error: str | None) -> None:
        carrier.deleteLater()
        done(probe, error)

    carrier.done.connect(deliver)

    def work() -> None:
        try:
            carrier.done.emit(opener(uri), None)
        except user_errors as exc:
            carrier.done.emit(None, str(exc))
        except Exception as exc:  # a bug of ours: said in one line, logged in full
            log.exception("opening %s failed", uri)
            carrier.done.emit(None, f"internal error: {type(exc).__name__}: {exc}")

    threading.Thread(target=work, name=f"connecting {uri}", daemon=True).start()
