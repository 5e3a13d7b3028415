"""The endpoints a user had attached in a workspace, attached again when it reopens. Thread: GUI.

A dashboard left watching three servers should watch them again the next morning without the
three URIs typed in again. What was attached is kept in the user's settings, per workspace
file, with the URI each was attached with (an edge agent's endpoint drops its parameters, so
the endpoint alone does not say how it was reached). Not in the workspace itself: a file
from someone else would otherwise connect to the hosts it names, with this user's tokens,
just by being opened. A recorded endpoint that is not remembered (a workspace recorded by
``probescope watch``, or detached) is attached again by the user, with the URI shown first.

Opening runs off the GUI thread (``probe_opener``); an endpoint that cannot be attached again
(its server down, its model file moved) stays in the list, stopped, with the reason, and is
tried again the next time the workspace opens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.gui.probe_opener import discard, open_in_background

if TYPE_CHECKING:
    from app.gui.main_window import MainWindow
    from probes import Probe

log = logging.getLogger(__name__)


class Reattacher:
    def __init__(self, window: MainWindow, user_errors: tuple[type[BaseException], ...],
                 on_finished: Callable[[int, dict[str, str]], None] | None = None) -> None:
        self._window = window
        self._user_errors = user_errors
        self._on_finished = on_finished
        self.pending: set[str] = set()  # endpoints being attached again now
        self.failures: dict[str, str] = {}  # endpoint -> why it was not attached again
        self._attached = 0
        self._workspace: Path | None = None

    @property
    def remembering(self) -> bool:
        # The demo starts its own probes on a fresh file each time: nothing to remember.
        return self._window.remembers_endpoints

    def remember(self, probe: Probe) -> None:
        """A probe the user attached: attach it again when this workspace next opens."""
        self.failures.pop(probe.endpoint, None)
        if not self.remembering:
            return
        settings, workspace = self._window.settings, self._window.db_path
        pairs = [p for p in settings.attached(workspace) if p[0] != probe.endpoint]
        settings.set_attached(workspace, [*pairs, (probe.endpoint, str(probe.uri))])

    def forget(self, endpoint: str) -> None:
        """Detached by the user: not attached again at the next open."""
        self.failures.pop(endpoint, None)
        if not self.remembering:
            return
        settings, workspace = self._window.settings, self._window.db_path
        settings.set_attached(workspace,
                              [p for p in settings.attached(workspace) if p[0] != endpoint])

    def uri_for(self, endpoint: str) -> str:
        """How to attach a recorded endpoint again: the URI it was attached with here, or
        else its name (which is its URI for every kind but an agent's, which then needs
        nothing more than its default token variable)."""
        for name, uri in self._window.settings.attached(self._window.db_path):
            if name == endpoint:
                return uri
        return endpoint

    def start(self) -> list[str]:
        """Attach again, in the background, what was attached when this workspace was last
        open here; the endpoints being attached."""
        self.pending.clear()
        self.failures.clear()
        self._attached = 0
        if not self.remembering:
            return []
        window = self._window
        workspace = self._workspace = window.db_path
        pairs = [p for p in window.settings.attached(workspace)
                 if window.monitor is not None and p[0] not in window.monitor.probes]
        for endpoint, uri in pairs:
            self.pending.add(endpoint)
            window.endpoint_list.set_state(endpoint, "starting", "attaching again…")
            open_in_background(uri, window.open_probe, self._user_errors, window,
                               lambda probe, error, endpoint=endpoint, workspace=workspace:
                               self._on_opened(workspace, endpoint, probe, error))
        if pairs:
            log.info("attaching %d endpoint(s) of %s again", len(pairs), workspace.name)
        return [e for e, _ in pairs]

    def attach_new(self, uris: list[str]) -> None:
        """Endpoints named on the command line (``probescope --attach URI``), attached as the
        dialog attaches, off the GUI thread; one that cannot be is said in the status bar and
        the log. One already being attached again with the same URI is left to that."""
        window = self._window
        again = {uri for _, uri in window.settings.attached(window.db_path)}
        for uri in uris:
            if self.remembering and uri in again:
                continue
            open_in_background(uri, window.open_probe, self._user_errors, window,
                               lambda probe, error, uri=uri, workspace=window.db_path:
                               self._on_new(workspace, uri, probe, error))

    def _on_new(self, workspace: Path, uri: str, probe: object | None,
                error: str | None) -> None:
        window = self._window
        if window.closed or workspace != window.db_path:
            discard(probe)
            return
        if error is None:
            try:
                window.adopt(probe, select=False)
                return
            except self._user_errors as exc:
                discard(probe)
                error = str(exc)
        log.warning("%s was not attached: %s", uri, error)
        window.statusBar().showMessage(f"could not attach {uri}: {error}", 15000)

    def _on_opened(self, workspace: Path, endpoint: str, probe: object | None,
                   error: str | None) -> None:
        window = self._window
        if window.closed or workspace != self._workspace or endpoint not in self.pending:
            discard(probe)  # the window closed or moved on to another workspace meanwhile
            return
        self.pending.discard(endpoint)
        if error is None:
            try:
                window.adopt(probe, select=False)
                self._attached += 1
            except self._user_errors as exc:
                discard(probe)
                monitor = window.monitor
                if monitor is None or endpoint not in monitor.probes:
                    error = str(exc)  # e.g. the workspace cannot be written
                # else the user attached it by hand meanwhile: it is watched, as wanted
        if error is not None:
            self.failures[endpoint] = error
            log.warning("%s was not attached again: %s", endpoint, error)
            window.endpoint_list.set_state(endpoint, "stopped", f"not attached again: {error}")
            if window.endpoint_list.current_endpoint() == endpoint:
                window.refresh_current()
        if not self.pending and self._on_finished is not None:
            self._on_finished(self._attached, dict(self.failures))
