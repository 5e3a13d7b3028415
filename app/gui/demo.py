"""Helpers the window leans on: the demo workspace, the user-fixable errors, endpoint details.

Thread: GUI. Kept apart from main_window.py so that file stays about the window itself.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from app.core.domain import local_text
from app.core.recorded import RecordedFacts
from app.gui.settings import demo_db_path
from probes import Probe, ProbeError

log = logging.getLogger(__name__)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can fix: shown as one line where they acted, never a traceback."""
    from app.core.demo import DemoError
    from app.core.domain import UriError
    from app.core.store import StoreError

    return (ProbeError, StoreError, UriError, DemoError, OSError)


def start_demo(window: Any) -> None:
    """Attach the demo's endpoints to a MainWindow, with a live remote endpoint served from this
    process on 127.0.0.1, drift references and the model versions to replay on; a failing
    part is reported, not fatal."""
    from app.core import demo
    from app.core.demo_server import serve_in_thread

    uris = demo.demo_endpoints()
    try:
        if window.demo_server is None:
            window.demo_server = serve_in_thread(demo.model_path(demo.REMOTE_MODEL))
        uris.insert(len(uris) - 1, demo.remote_endpoint(window.demo_server.url))  # before system:
    except user_errors() as exc:
        log.error("demo model server: %s", exc)
        window.statusBar().showMessage(f"demo: no remote endpoint: {exc}", 10000)
    attached = []
    for uri in uris:
        try:
            attached.append(window.attach(uri).endpoint)
        except user_errors() as exc:
            log.error("demo endpoint %s: %s", uri, exc)
            window.statusBar().showMessage(f"demo: {exc}", 10000)
    try:
        _prepare_workspace(window.db_path, [e for e in attached if not e.startswith("system:")])
        window.workbench.seed_versions([demo.model_path(v) for v in demo.MODEL_VERSIONS])
        window.workbench.endpoints_changed()  # drift shows the first endpoint with a reference
    except user_errors() as exc:
        log.error("demo workspace: %s", exc)
        window.statusBar().showMessage(f"demo: {exc}", 10000)
    if attached:
        window.endpoint_list.select(attached[0])  # the production model leads


def _prepare_workspace(db_path: Path, model_endpoints: list[str]) -> None:
    from app.core.demo import give_references
    from app.core.store import Store

    store = Store(db_path)
    try:
        give_references(store, model_endpoints)
    finally:
        store.close()


def fresh_demo_path() -> Path:
    # The demo starts from an empty workspace each time, so its file never grows without bound.
    path = demo_db_path()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def recorded_rows(facts: RecordedFacts, endpoint_row: dict) -> list[tuple[str, str]]:
    """The details of an endpoint no probe watches, as the workspace recorded them
    (``endpoint_row``: its row of ``Store.endpoints``)."""
    rows = [(f"Recorded {facts.counted}", f"{facts.count:,}")]
    if facts.counted == "requests":
        share = f" ({facts.failed / facts.count:.1%})" if facts.count else ""
        rows.append(("Failed", f"{facts.failed:,}{share}"))
    if endpoint_row.get("slo_ms"):
        rows.append(("SLO", f"{endpoint_row['slo_ms']:g} ms"))
    if endpoint_row.get("model_version"):
        rows.append(("Model version", str(endpoint_row["model_version"])))
    if facts.first_ns is not None and facts.last_ns is not None:
        rows.append(("Recorded from", f"{local_text(facts.first_ns)} to "
                                      f"{local_text(facts.last_ns)}"))
    return rows


def details_html(endpoint: str, state: str | None, probe: Probe | None,
                 not_attached: str | None = None,
                 recorded: list[tuple[str, str]] | None = None) -> str:
    """The endpoint facts shown under the list: URI, state, counters, info, last error;
    ``not_attached``: why a remembered endpoint was not attached again; ``recorded``: what
    the workspace holds of an endpoint no probe watches (``recorded_rows``)."""
    target, _, query = endpoint.partition("?")
    rows: list[tuple[str, object]] = [("URI", target)]
    if query:  # one per line-breakable item, so a long payload path cannot widen the dock
        rows.append(("Parameters", ", ".join(unquote(p) for p in query.split("&"))))
    rows.append(("State", state or "stopped"))
    if probe is not None:
        # An agent's probe sends no request of its own: its count is of pulls (the model's
        # requests are its info's "model requests").
        if probe.scheme == "system":  # it samples this machine and sends no request
            rows.append(("Samples", f"{probe.requests:,}"))
        else:
            asked = "Pulls" if hasattr(probe, "model_requests") else "Requests"
            rows += [(asked, f"{probe.requests:,}"), ("Failed", f"{probe.errors:,}")]
        slo = getattr(probe, "slo_ms", None)
        if slo is not None:
            rows.append(("SLO", f"{slo:g} ms"))
        rows += [(k.replace("_", " ").capitalize(), v) for k, v in probe.info().items()
                 if k != "kind"]
        if probe.last_error:
            rows.append(("Last error", probe.last_error))
    else:
        rows += recorded or []
        if not_attached:
            rows.append(("Not attached again", not_attached))
            rows.append(("To try again", "Endpoints > Attach again… (Ctrl+Shift+R)"))
    return "".join(f"<b>{html.escape(k)}</b>: {html.escape(str(v))}<br>" for k, v in rows)
