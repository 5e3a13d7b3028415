"""The workspace's schema: one function per named step, and ``MIGRATIONS``, their order.

Apart from ``Store`` because a step is written once and never edited after it ships, while
the queries beside it change with every feature. The steps only create tables, indexes and
columns; ``Store._migrate`` (store.py) runs the ones a file lacks, all in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _migrate_core(db: sqlite_utils.Database) -> None:
    db["endpoints"].create(
        {"id": int, "uri": str, "kind": str, "created_ns": int, "slo_ms": float,
         "model_version": str},
        pk="id", not_null={"uri"},
    )
    db["endpoints"].create_index(["uri"], unique=True)
    db["metrics"].create({"id": int, "name": str}, pk="id", not_null={"name"})
    db["metrics"].create_index(["name"], unique=True)
    db["samples"].create({"endpoint_id": int, "metric_id": int, "ts_ns": int, "value": float})
    db["samples"].create_index(["endpoint_id", "metric_id", "ts_ns"])
    db["captures"].create(
        {"id": int, "endpoint_id": int, "ts_ns": int, "request_id": str, "latency_ms": float,
         "status": str, "error": str, "label": str, "prediction": str, "confidence": float,
         "model_version": str, "truncated": int, "inputs": bytes, "outputs": bytes},
        pk="id",
    )
    db["captures"].create_index(["endpoint_id", "ts_ns"])
    db["captures"].create_index(["status"])
    db["captures"].create_index(["request_id"])


def _migrate_drift(db: sqlite_utils.Database) -> None:
    # One reference per endpoint; drift points are narrow rows (one per feature per evaluation)
    # and each evaluation keeps its share of drifted features for the share-over-time series.
    db["drift_references"].create(
        {"endpoint_id": int, "kind": str, "path": str, "source_endpoint": str, "start_ns": int,
         "end_ns": int, "columns": str, "set_ns": int}, pk="endpoint_id")
    db["drift_evaluations"].create(
        {"id": int, "endpoint_id": int, "ts_ns": int, "source": str, "rows_reference": int,
         "rows_current": int, "share_drifted": float, "report_path": str}, pk="id")
    db["drift_evaluations"].create_index(["endpoint_id", "source", "ts_ns"])
    db["drift_points"].create(
        {"evaluation_id": int, "endpoint_id": int, "ts_ns": int, "feature": str, "method": str,
         "score": float, "threshold": float, "drifted": int, "source": str})
    db["drift_points"].create_index(["endpoint_id", "source", "ts_ns"])


def _migrate_versions_replay(db: sqlite_utils.Database) -> None:
    # Model versions in registration order (the order bisect walks); replays keep their cases
    # (by capture id) and one narrow row per case x version, so a replay reopens as it was.
    db["versions"].create(
        {"id": int, "name": str, "kind": str, "location": str, "version": str, "sha256": str,
         "parameters": int, "opset": int, "producer": str, "inputs": str, "outputs": str,
         "size_bytes": int, "registered_ns": int}, pk="id", not_null={"name", "location"})
    db["versions"].create_index(["name"], unique=True)
    db["replays"].create(
        {"id": int, "created_ns": int, "title": str, "selection": str, "versions": str,
         "criteria": str, "cancelled": int, "cases": int}, pk="id")
    db["replay_cases"].create(
        {"replay_id": int, "idx": int, "capture_id": int, "control": int,
         "first_failing": str}, pk=("replay_id", "idx"))
    db["replay_results"].create(
        {"replay_id": int, "case_idx": int, "version_idx": int, "prediction": str,
         "confidence": float, "latency_ms": float, "error": str, "failing": int,
         "outputs": bytes}, pk=("replay_id", "version_idx", "case_idx"))


def _migrate_incidents(db: sqlite_utils.Database) -> None:
    # An incident is one row that the rules keep up to date (peak value, severity, when it
    # cleared); people add notes and move its status (open, acknowledged, resolved).
    db["incidents"].create(
        {"id": int, "endpoint_id": int, "rule": str, "severity": str, "status": str,
         "opened_ns": int, "trigger_ns": int, "cleared_ns": int, "updated_ns": int,
         "value": float, "threshold": float, "summary": str, "details": str}, pk="id")
    db["incidents"].create_index(["endpoint_id", "rule", "opened_ns"])
    db["incidents"].create_index(["opened_ns"])
    db["incident_notes"].create(
        {"id": int, "incident_id": int, "ts_ns": int, "author": str, "text": str}, pk="id")
    db["incident_notes"].create_index(["incident_id", "ts_ns"])
    db["incident_rules"].create({"endpoint_id": int, "rules": str, "set_ns": int},
                                pk="endpoint_id")


def _migrate_captures_by_time(db: sqlite_utils.Database) -> None:
    # Selections of captures across endpoints, newest first (replay, the failure list) walk
    # this index backwards instead of sorting every matching row with its blobs.
    db["captures"].create_index(["ts_ns"], if_not_exists=True)


def _migrate_captures_sampled(db: sqlite_utils.Database) -> None:
    # NULL in older rows: captures taken before the flag existed count as sampled.
    db["captures"].add_column("sampled", int)


def _migrate_incidents_resolved(db: sqlite_utils.Database) -> None:
    # When a person resolved the incident (NULL while it is not resolved). Before this, the
    # only record was a note, and a later note reading "Resolved ..." could pass for it.
    db["incidents"].add_column("resolved_ns", int)


def _migrate_endpoints_min_confidence(db: sqlite_utils.Database) -> None:
    # The confidence below which the endpoint's probe flags an answer LOW_CONFIDENCE (NULL:
    # none given, or an older workspace, where the URI's own min_confidence still says it).
    # A replay holds a version to it: an answer production would flag is not a fix.
    db["endpoints"].add_column("min_confidence", float)


def _migrate_replays_slow_limits(db: sqlite_utils.Database) -> None:
    # Each SLOW case's SLO and this machine's scale for it, as the replay judged them (JSON):
    # a reopened replay then says which SLOW failures were judged on outputs alone, and why
    # a case is slow, as the replay did when it ran (NULL: saved before this).
    db["replays"].add_column("slow_limits", str)


def _migrate_endpoints_input_names(db: sqlite_utils.Database) -> None:
    # The names of the values the endpoint's probe sends, in order (a JSON list: its payload
    # file's columns; NULL when unnamed or unknown). Captures keep values by position, so a
    # drift reference written in another column order is matched to these by name.
    db["endpoints"].add_column("input_names", str)


# Named, ordered migrations. Append new ones at the end; never edit or reorder a shipped one.
# Each feature that needs tables appends its own step (e.g. "drift_points"), so work on
# different features does not fight over one version number.
MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("core", _migrate_core),
    ("drift", _migrate_drift),
    ("versions_replay", _migrate_versions_replay),
    ("incidents", _migrate_incidents),
    ("captures_by_time", _migrate_captures_by_time),
    ("captures_sampled", _migrate_captures_sampled),
    ("incidents_resolved", _migrate_incidents_resolved),
    ("endpoints_min_confidence", _migrate_endpoints_min_confidence),
    ("replays_slow_limits", _migrate_replays_slow_limits),
    ("endpoints_input_names", _migrate_endpoints_input_names),
]
SCHEMA_VERSION = len(MIGRATIONS)
