"""The replay panel's job plumbing: one job at a time on its worker pool, the busy state
(buttons, Cancel, ``busy_changed``), the progress bar and the version a replay is asking, the
previous replay greyed while a new one runs, Cancel, and a failed job or a refusal said in the
summary. A mixin of ``ReplayPanel`` (as Orange's ConcurrentWidgetMixin), apart so the panel's
module holds what the user does and this how it runs. Thread: GUI; the jobs' own work runs on
the panel's worker pool.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from PySide6.QtGui import QPalette

from app.core.replay import ReplayResult
from app.gui.jobs import Job, JobRunner
from app.gui.replay_summary import refusal_html


class ReplayJobsMixin:
    """Starts, tracks and ends the panel's jobs. Mixed into ``ReplayPanel`` (a QWidget, which
    sets this state up): it drives the panel's run bar, summary, grid and case view, and emits
    its ``busy_changed``, ``version_started`` and ``replay_failed``."""

    # Set up, and said what each is, in ``ReplayPanel.__init__``.
    runner: JobRunner
    result: ReplayResult | None
    _job: Job | None
    _cancellable: bool
    _versions_running: int

    def busy(self) -> bool:
        return self._job is not None

    def _start(self, fn: Callable, on_done: Callable[[Any], None], *,
               replaying: bool = False,
               on_failed: Callable[[str], None] | None = None) -> Job | None:
        """Run ``fn`` on the worker. Only a replay (``replaying``) checks for Cancel and
        reports progress: for the other jobs Cancel stays off, and the bar keeps showing the
        replay on screen. ``on_failed`` takes the error line (default: "Replay failed")."""
        if self._job is not None:
            return None
        job = Job(fn)
        job.signals.finished.connect(lambda result: self._finish(on_done, result))
        job.signals.failed.connect(lambda message: self._on_job_failed(message, on_failed))
        self._job = job
        self._cancellable = replaying
        if replaying:
            job.signals.progressed.connect(self._on_job_progressed)
            self.progress.setValue(0)
        for w in (self.run_button, self.load_button, self.open_button, self.export_button):
            w.setEnabled(False)
        self.cancel_button.setEnabled(replaying)
        self.busy_changed.emit(True)
        self.runner.start(job)
        return job

    def _idle(self) -> None:
        self._job = None
        self._cancellable = False
        self._mark_stale(False)
        for w in (self.run_button, self.load_button):
            w.setEnabled(True)
        self.open_button.setEnabled(self.saved_box.count() > 0)
        self.export_button.setEnabled(self.result is not None)
        self.cancel_button.setEnabled(False)
        self.busy_changed.emit(False)

    def _finish(self, on_done: Callable[[Any], None], result: Any) -> None:
        self._idle()
        on_done(result)

    def _on_job_progressed(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 1000))

    def _on_version_began(self, k: int) -> None:
        if not self._versions_running:  # a late word from a replay already over
            return
        n = self._versions_running
        self.progress.setFormat(f"version {min(k, n)} of {n} \u00b7 %p%")
        self.version_started.emit(k, n)

    def _mark_stale(self, stale: bool, versions: int = 0) -> None:
        """While a replay runs, the one still on screen is the previous one: its grid and
        case greyed (and not selectable), the summary says so, and the bar says which
        version runs. It stood unmarked beside the new replay's progress."""
        if not stale:
            if self._versions_running:
                self._versions_running = 0
                self.progress.setFormat("%p%")
                self.result_view.setEnabled(True)
                self.case_view.setEnabled(True)
            return
        self._versions_running = versions
        self.progress.setFormat(f"opening {versions} version{'s' if versions > 1 else ''}"
                                " \u00b7 %p%")
        if self.result is None:
            return
        self.result_view.setEnabled(False)
        self.case_view.setEnabled(False)
        muted = self.palette().color(QPalette.ColorGroup.Disabled,
                                     QPalette.ColorRole.WindowText).name()
        name = f"#{self.result.replay_id}" if self.result.replay_id is not None else \
            "(not saved)"
        self.summary.setText(
            f"<b>Replaying\u2026</b> Below, greyed until it finishes: the previous replay, "
            f"{html.escape(name)}.<br><span style=\"color:{muted}\">"
            f"{self.summary.text()}</span>")

    def _on_job_failed(self, message: str,
                       on_failed: Callable[[str], None] | None = None) -> None:
        self._idle()
        if on_failed is not None:
            on_failed(message)
        else:
            self._refuse(message, "Replay failed")

    def _refuse(self, message: str, what: str = "Cannot replay") -> None:
        """Say why, in the summary and the status bar; a replay still shown stays, and says
        so, since Export writes it."""
        self.summary.setText(refusal_html(message, what, self.result))
        self.replay_failed.emit(message)

    def cancel(self) -> None:
        """Ask the replay to stop: between batches, or within 50 ms while a server's call
        is under way (a silent server is not waited out). Said at once, and Cancel taken
        away, rather than leave a button that seems to do nothing."""
        if self._job is None or not self._cancellable or self._job.is_cancelled():
            return
        self._job.cancel()
        self.cancel_button.setEnabled(False)
        self.summary.setText("<b>cancelling…</b> (the finished versions are kept)")
