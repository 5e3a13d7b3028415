"""The versions panel's contract table, cell by cell: a target's column header (an agent by
its ``agent HOST:PORT``), a version's cell on a target (the verdict with its measured figures,
its colour and tooltip, or why there is no report), and the dimming of a cell whose result came
from a check before the latest. Plain functions over Qt items; ``VersionsPanel`` lays the table
out and calls them. Thread: GUI.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QTableWidgetItem

from app.core.contract import FAIL, PASS, ContractReport, TargetCheck
from app.core.versions import KIND_ONNX, ModelVersion

# Why a version has no report. Only NO_CONTRACT is a state the user chose (nothing promised);
# the others are mistakes to fix, and must not read as it.
NO_CONTRACT = "no_contract"
CONTRACT_ERROR = "contract_error"  # a contract (or its validation file) that cannot be used
UNREADABLE = "unreadable"  # the model file itself cannot be read
CHANGED = "changed"  # the file is no longer the one registered under the version's name
PROBLEM_TEXT = {NO_CONTRACT: "no contract", CONTRACT_ERROR: "contract error",
                UNREADABLE: "cannot read model",
                CHANGED: "changed since registered: register it again"}
CELL_COLORS = {PASS: "#2e7d32", FAIL: "#c62828", "unreachable": "#607d8b",
               "unsupported": "#607d8b", NO_CONTRACT: "#607d8b", CONTRACT_ERROR: "#6a1b9a",
               UNREADABLE: "#6a1b9a", CHANGED: "#6a1b9a"}
_SHORT = {"accuracy": "acc", "latency_p95_ms": "p95", "peak_memory_mb": "mem",
          "parameters": "params"}
_UNITS = {"latency_p95_ms": " ms", "peak_memory_mb": " MB"}
# A cell's data in this role is True when it shows an earlier check's result.
EARLIER_ROLE = Qt.ItemDataRole.UserRole + 1


def column_title(target: str) -> str:
    """A target's column header: an agent by its host:port (``agent 10.0.0.7:7070``), never
    its query (a token file's path took the header's width, and elided the address)."""
    if not target.startswith("agent+"):
        return target
    try:
        parts = urlsplit(target.removeprefix("agent+"))
        host, port = parts.hostname, parts.port
    except ValueError:
        return target.partition("?")[0]
    if not host:
        return target.partition("?")[0]
    host = f"[{host}]" if ":" in host else host
    return f"agent {host}:{port or (443 if target.startswith('agent+https') else 80)}"


def problem_kind(report: str) -> str:
    return getattr(report, "kind", NO_CONTRACT)


def figure(value: float | str) -> str:
    """A measured figure or limit as the registry row writes numbers: whole numbers with
    thousands separators (``14,180,352``, not ``1.41804e+07``), others to 6 digits."""
    if isinstance(value, str | bool):
        return str(value)
    if isinstance(value, int) or (value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:g}"


def cell_text(check: TargetCheck) -> str:
    """``PASS · acc 0.963 · p95 0.006 ms · mem 10 MB`` (failed clauses marked ✗)."""
    if not check.clauses:
        return check.status.upper()
    parts = [check.status.upper()]
    for c in check.clauses:
        if c.name in _SHORT and c.measured is not None:
            mark = "✗ " if c.status == FAIL else ""
            parts.append(f"{mark}{_SHORT[c.name]} {figure(c.measured)}"
                         f"{_UNITS.get(c.name, '')}")
        elif c.status == FAIL:
            parts.append(f"✗ {c.name}")
    return " · ".join(parts)


def cell_tooltip(check: TargetCheck) -> str:
    lines = [f"{check.target}: {check.status}"] + ([check.reason] if check.reason else [])
    for c in check.clauses:
        limit = "no limit" if c.limit is None else f"limit {figure(c.limit)}"
        measured = "-" if c.measured is None else figure(c.measured)
        lines.append(f"{c.status:>8}  {c.name}: {measured} ({limit})"
                     + (f" — {c.detail}" if c.detail else ""))
    return "\n".join(lines)


def header_item(target: str) -> QTableWidgetItem:
    """A target's column header, with the whole target as its tooltip."""
    header = QTableWidgetItem(column_title(target))
    header.setToolTip(target)
    return header


def cell_item(v: ModelVersion, report: ContractReport | str | None,
              target: str) -> QTableWidgetItem:
    """The cell of version ``v`` on ``target``: ``report`` is its contract report, why
    it has none (a ``str``), or None when it was not checked."""
    if v.kind != KIND_ONNX:
        item = QTableWidgetItem("a server's model: no file to check")
        item.setToolTip("a contract is measured on a model file; this version is "
                        f"served at {v.location}")
    elif report is None:
        item = QTableWidgetItem("not checked")
    elif isinstance(report, str):
        kind = problem_kind(report)
        item = QTableWidgetItem(PROBLEM_TEXT[kind])
        item.setToolTip(report)
        item.setBackground(QColor(CELL_COLORS[kind]))
        if kind != NO_CONTRACT:  # a mistake to fix: as loud as a result
            item.setForeground(QColor("white"))
        item.setData(Qt.ItemDataRole.UserRole, kind)
    else:
        check = next((t for t in report.targets if t.target == target), None)
        if check is None:
            item = QTableWidgetItem("not checked")
        else:
            item = QTableWidgetItem(cell_text(check))
            item.setToolTip(cell_tooltip(check))
            item.setBackground(QColor(CELL_COLORS.get(check.status, "#607d8b")))
            item.setForeground(QColor("white"))
            item.setData(Qt.ItemDataRole.UserRole, check.status)
    return item


def mark_if_earlier(item: QTableWidgetItem, name: str, target: str | None, *,
                    cell_check: dict[tuple[str, str | None], int], check_number: int,
                    check_times: dict[int, datetime]) -> None:
    """Dim a cell whose result came from a check before the latest (one cancelled before
    this version, or the latest measured other targets), and say when it was measured.
    Kept rather than cleared: an older verdict took minutes to measure and is still worth
    reading, as long as it cannot pass for this check's."""
    number = cell_check.get((name, target))
    if number is None or number >= check_number:
        return
    at = check_times.get(number)
    when = at.strftime("%H:%M") if at else "an earlier time"
    color = item.background().color()
    color.setAlpha(70)
    item.setBackground(color)
    item.setForeground(QColor("#757575"))
    font = item.font()
    font.setItalic(True)
    item.setFont(font)
    item.setToolTip(f"from the check at {when}, not this one\n{item.toolTip()}".rstrip())
    item.setData(EARLIER_ROLE, True)
