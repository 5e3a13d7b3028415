"""The incidents list: status, severity, endpoint, window and trigger; notes; acknowledge and
resolve. Selecting one emits its time window for the plots. Thread: GUI only.

The panel reads the workspace itself (a few small queries on a short-lived connection), so it
runs alone for preview: ``IncidentsPanel(db_path).show()``. The window connects
``incident_selected`` to its plots and ``export_requested`` to its report worker, and hands
the live ``IncidentMonitor`` to ``follow`` so the list refreshes when an incident changes.
"""

from __future__ import annotations

import getpass
import logging
import time
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.core.domain import utc_text
from app.core.incident_rules import RULE_TITLES
from app.core.incidents import (
    IncidentError,
    IncidentMonitor,
    Status,
    change_status,
    incident_window,
    status_text,
)
from app.core.store import Store, StoreError
from widgets.endpoint_panel import short_name

log = logging.getLogger(__name__)

NOTE_BUSY_MS = 1000  # how long a note or status change waits for another writer

# What tripped, and where, first, with status and severity in one column ("open ·
# critical"): the dock is narrow, and the rest is in the detail below.
COLUMNS = ("#", "Trigger", "Endpoint", "State", "Window")
SEVERITY_COLORS = {"critical": QColor("#c0392b"), "warning": QColor("#d68910")}
STATUS_COLORS = {Status.OPEN: QColor("#c0392b"), Status.ACKNOWLEDGED: QColor("#1f5fa8"),
                 Status.RESOLVED: QColor("#5b6573")}


def _clock(ts_ns: int | None) -> str:
    """Local clock time, as the plots show it; the date only when it is not today (the dock
    is narrow: the full form cut the Window column to a "W")."""
    if ts_ns is None:
        return "now"
    when = datetime.fromtimestamp(ts_ns / 1e9)
    if when.date() == datetime.now().date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%d %b %H:%M")


def _zoned_clock(ts_ns: int) -> str:
    """``_clock`` with its zone ("05:39:42 EST"): the notes sit under a summary whose own
    text, like the notes the rules write, gives times in UTC."""
    return f"{_clock(ts_ns)} {datetime.fromtimestamp(ts_ns / 1e9).astimezone().tzname()}"


class IncidentTableModel(QAbstractTableModel):
    """Incidents (dicts as the store returns them), newest first."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        # Endpoints a probe watches now: an open incident of one reaches to "now"; of any
        # other (a recording reopened), to its last sample, which the list cannot tell.
        self.watched: set[str] = set()

    def set_watched(self, watched: set[str]) -> None:
        if watched != self.watched:
            self.watched = set(watched)
            if self.rows:
                self.dataChanged.emit(self.index(0, 4), self.index(len(self.rows) - 1, 4))

    def _end_text(self, row: dict) -> str:
        if row["cleared_ns"] is None and row["status"] == Status.RESOLVED:
            return "resolved"
        if row["cleared_ns"] is None and row["endpoint"] not in self.watched:
            return "open"  # not "now": nothing measures it now
        return _clock(row["cleared_ns"])

    def set_rows(self, rows: list[dict]) -> None:
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            if COLUMNS[section] == "Window":  # local time, unlike the report and the CLI
                return f"Window ({datetime.now().astimezone().tzname()})"
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        row, col = self.rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (str(row["id"]), RULE_TITLES.get(row["rule"], row["rule"]),
                    short_name(row["endpoint"]), f"{status_text(row)} · {row['severity']}",
                    f"{_clock(row['opened_ns'])} – {self._end_text(row)}")[col]
        if role == Qt.ItemDataRole.ToolTipRole:
            # The list shows local time, the PDF report and the CLI UTC: say both here so
            # one can be matched with the other.
            span = f"opened {utc_text(row['opened_ns'])}" + (
                f", cleared {utc_text(row['cleared_ns'])}" if row["cleared_ns"] else
                ", still open; no probe watches its endpoint now" if row["endpoint"]
                not in self.watched and row["status"] != Status.RESOLVED else "")
            return f"{row['endpoint']}\n{row['summary']}\n{span}"
        if role == Qt.ItemDataRole.ForegroundRole and col == 3:
            # An open incident in its severity's colour; once handled, in its status's.
            if row["status"] == Status.OPEN:
                return SEVERITY_COLORS.get(row["severity"], STATUS_COLORS[Status.OPEN])
            return STATUS_COLORS.get(row["status"])
        return None


class IncidentsPanel(QWidget):
    incident_selected = Signal(object, object, str)  # start_ns, end_ns, endpoint
    export_requested = Signal(int)  # incident id
    error_occurred = Signal(str)  # a line for the status bar
    incident_changed = Signal(object)  # an IncidentEvent, delivered on the GUI thread
    incidents_loaded = Signal(list)  # the rows of the latest refresh (newest first)
    _event_arrived = Signal(object)  # emitted on the incidents thread; queued to this one

    def __init__(self, db_path: str | Path | None = None, parent: QWidget | None = None, *,
                 auto_refresh_ms: int = 0) -> None:
        super().__init__(parent)
        self.db_path = Path(db_path) if db_path else None
        self.model = IncidentTableModel()
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().currentRowChanged.connect(self._on_table_current_changed)

        self.summary = QLabel("No incident selected")
        self.summary.setWordWrap(True)
        self.notes = QPlainTextEdit()
        self.notes.setReadOnly(True)
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("Add a note and press Enter")
        self.note_edit.returnPressed.connect(self._on_note_edit_return_pressed)
        self.ack_button = QPushButton("Acknowledge")
        self.resolve_button = QPushButton("Resolve")
        self.export_button = QPushButton("Export report…")
        self.ack_button.clicked.connect(lambda: self.set_status(Status.ACKNOWLEDGED))
        self.resolve_button.clicked.connect(lambda: self.set_status(Status.RESOLVED))
        self.export_button.clicked.connect(self._on_export_button_clicked)

        buttons = QHBoxLayout()
        for b in (self.ack_button, self.resolve_button, self.export_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        detail = QWidget()
        dl = QVBoxLayout(detail)
        dl.setContentsMargins(0, 0, 0, 0)
        dl.addWidget(self.summary)
        dl.addLayout(buttons)
        dl.addWidget(self.notes, 1)
        dl.addWidget(self.note_edit)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(detail)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        self._event_arrived.connect(self._on_event_arrived, Qt.ConnectionType.QueuedConnection)
        self._update_buttons()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh)
        if auto_refresh_ms > 0:
            self._timer.start(auto_refresh_ms)
        if self.db_path is not None:
            self.refresh()

    # -- public ---------------------------------------------------------------------------

    def follow(self, monitor: IncidentMonitor) -> None:
        """Refresh whenever ``monitor`` opens, reopens, escalates or clears an incident.

        The monitor calls back on its own thread; the signal crosses into the GUI thread
        queued, as the recorder bridge does."""
        monitor.subscribe(self._event_arrived.emit)

    def _on_event_arrived(self, event: object) -> None:
        self.refresh()
        self.incident_changed.emit(event)

    def set_workspace(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.refresh()

    def selected_incident(self) -> dict | None:
        index = self.table.currentIndex()
        if not index.isValid() or index.row() >= len(self.model.rows):
            return None
        return self.model.rows[index.row()]

    def refresh(self) -> None:
        """Re-read the incidents, keeping the selection on the same incident."""
        if self.db_path is None or not self.db_path.exists():
            return
        current = self.selected_incident()
        try:
            store = Store(self.db_path, readonly=True)
            try:
                rows = store.incidents(limit=500) if "incidents" in store.db.table_names() \
                    else []
            finally:
                store.close()
        except StoreError as exc:
            self.error_occurred.emit(str(exc))
            return
        self.model.set_rows(rows)
        if rows:  # the id column needs a few digits, not a default width: room for Window
            self.table.resizeColumnToContents(0)
        self.incidents_loaded.emit(rows)
        if current is not None:
            for i, row in enumerate(rows):
                if row["id"] == current["id"]:
                    self.table.selectRow(i)
                    break
        self._show_detail()

    def select_incident(self, incident_id: int) -> bool:
        for i, row in enumerate(self.model.rows):
            if row["id"] == incident_id:
                self.table.selectRow(i)
                return True
        return False

    def set_status(self, status: str) -> None:
        """Acknowledge or resolve the selected incident, judged by its status as stored now:
        the row may be older than the rule's clearing or another person's resolve. What was
        done differently from the button's word, or refused, is one status-bar line."""
        row = self.selected_incident()
        if row is None or self.db_path is None:
            return
        note = self.note_edit.text().strip()
        done: list = []
        if self._write(lambda s: done.append(change_status(
                s, row["id"], status, note=note, author=_author()))):
            self.note_edit.clear()  # kept when it could not be saved: nothing to retype
            if done and not done[0].as_asked:
                self.error_occurred.emit(done[0].message)  # "already resolved at …"

    def add_note(self, text: str) -> bool:
        """Whether the note was saved."""
        row = self.selected_incident()
        if row is None or not text.strip():
            return False
        return self._write(lambda s: s.add_incident_note(row["id"], text.strip(),
                                                         author=_author()))

    # -- handlers -------------------------------------------------------------------------

    def _on_table_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._show_detail()
        row = self.selected_incident()
        if row is None:
            return
        # An incident still active is shown up to now, as the live plots are.
        start, end = incident_window(row, last_ns=time.time_ns())
        self.incident_selected.emit(start, end, row["endpoint"])

    def _on_note_edit_return_pressed(self) -> None:
        if self.add_note(self.note_edit.text()):
            self.note_edit.clear()  # kept when it could not be saved: nothing to retype

    def _on_export_button_clicked(self) -> None:
        row = self.selected_incident()
        if row is not None:
            self.export_requested.emit(int(row["id"]))

    # -- internals ------------------------------------------------------------------------

    def _write(self, change) -> bool:
        """Apply ``change`` to the workspace; False, with the reason shown, when it cannot.
        A short busy wait: a note must not freeze the window behind another writer."""
        assert self.db_path is not None
        try:
            store = Store(self.db_path)
            try:
                store.db.execute(f"PRAGMA busy_timeout={NOTE_BUSY_MS}")
                change(store)
            finally:
                store.close()
        except StoreError as exc:
            self.error_occurred.emit(str(exc))
            return False
        except IncidentError as exc:  # refused as it now stands: show how it stands
            self.error_occurred.emit(str(exc))
            self.refresh()
            return False
        self.refresh()
        return True

    def _update_buttons(self) -> None:
        row = self.selected_incident()
        state = status_text(row) if row is not None else None
        self.ack_button.setEnabled(state == Status.OPEN)
        # One the rule cleared can still be closed out by a person (resolved_ns).
        self.resolve_button.setEnabled(state in (Status.OPEN, Status.ACKNOWLEDGED,
                                                 Status.CLEARED))
        self.export_button.setEnabled(row is not None)
        self.note_edit.setEnabled(row is not None)

    def _show_detail(self) -> None:
        self._update_buttons()
        row = self.selected_incident()
        if row is None or self.db_path is None:
            self.summary.setText("No incident selected")
            self.notes.setPlainText("")
            return
        self.summary.setText(f"#{row['id']} {row['summary']}")
        try:
            store = Store(self.db_path, readonly=True)
            try:
                notes = store.incident_notes(row["id"])
            finally:
                store.close()
        except StoreError as exc:
            self.error_occurred.emit(str(exc))
            return
        self.notes.setPlainText("\n".join(
            f"{_zoned_clock(n['ts_ns'])}  {n['author'] or ''}: {n['text']}" for n in notes))


def _author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
