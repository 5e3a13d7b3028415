"""Incident -> PDF with Qt painting (QPdfWriter + QPainter, works offscreen)."""

from app.report.writer import (
    CONTEXT_S,
    PAGE_SIZES,
    ReportCancelled,
    ReportError,
    ensure_gui_app,
    write_report,
)

__all__ = ["CONTEXT_S", "PAGE_SIZES", "ReportCancelled", "ReportError", "ensure_gui_app",
           "write_report"]
