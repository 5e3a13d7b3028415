"""A replay's latency per version is of single requests: after the batches, a spread sample of
cases is sent one at a time to every version, the versions taking turns. A batch's time
shared among its rows was every case's alike (p50 = p95), a few nanoseconds for the demo's
models, and said nothing of how long one request takes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from app.core.replay import REQUEST_SAMPLE, Selection, replay, select_case_set
from app.core.replay_run import request_sample
from app.core.replay_store import load_replay, save_replay
from app.core.replay_targets import LocalOnnxTarget
from app.core.store import Store

SLOW_REQUEST_S = 0.003


class SlowAlone(LocalOnnxTarget):
    """wine-v2 that takes 3 ms more for a request of one row, and no more per batch: the
    time a server's per-request overhead (parsing, a network hop) adds."""

    def run_adapted(self, feeds):
        if len(next(iter(feeds.values()))) == 1:
            time.sleep(SLOW_REQUEST_S)
        return super().run_adapted(feeds)


@pytest.fixture
def prepared(demo_db: Path):
    store = Store(demo_db)
    try:
        return select_case_set(store, Selection(limit=600, controls=200))
    finally:
        store.close()


def test_each_version_s_percentiles_are_of_single_requests(prepared, versions):
    assert len(prepared) > REQUEST_SAMPLE
    result = replay(prepared, [LocalOnnxTarget(versions[0]), SlowAlone(versions[1])],
                    batch_size=256)
    fast, slow = result.summaries()
    assert fast.requests_timed == slow.requests_timed == REQUEST_SAMPLE
    # A request of its own costs 3 ms more on the slow one, and its percentiles say so;
    # shared among 256 rows, that would have been 0.01 ms a row.
    assert slow.latency_p50_ms >= SLOW_REQUEST_S * 1e3
    assert fast.latency_p50_ms < slow.latency_p50_ms
    # The batched pace is the rest's share of their batches: far below one request's time.
    assert fast.batched_ms_per_row < fast.latency_p50_ms
    rows = result.request_rows
    assert len(set(rows.tolist())) == REQUEST_SAMPLE
    assert (result.runs[1].latency_ms[rows] >= SLOW_REQUEST_S * 1e3).all()
    doc = result.to_json()["versions"][1]["latency_ms"]
    assert doc["per"] == "request" and doc["requests_timed"] == REQUEST_SAMPLE


def test_a_reopened_replay_reads_the_same_requests(prepared, versions, demo_db):
    result = replay(prepared, [LocalOnnxTarget(v) for v in versions[:2]], batch_size=256)
    store = Store(demo_db)
    try:
        again = load_replay(store, save_replay(store, result))
    finally:
        store.close()
    assert np.array_equal(again.request_rows, result.request_rows)
    assert again.summaries() == result.summaries()


def test_a_cancel_while_requests_are_timed_keeps_the_ones_timed(prepared, versions, demo_db):
    calls = 0

    def stop_after_50_requests() -> bool:
        return calls >= 50

    class Counting(LocalOnnxTarget):
        def run_adapted(self, feeds):
            nonlocal calls
            if len(next(iter(feeds.values()))) == 1:
                calls += 1
            return super().run_adapted(feeds)

    result = replay(prepared, [Counting(versions[0])], batch_size=256,
                    cancelled=stop_after_50_requests)
    assert result.cancelled and len(result.runs) == 1  # every version had answered
    (summary,) = result.summaries()
    # The first ones of the sample (a spread in itself): 50, less the warm-up's one row.
    assert 0 < summary.requests_timed < REQUEST_SAMPLE
    assert result.criteria.requests_timed == summary.requests_timed
    store = Store(demo_db)
    try:
        again = load_replay(store, save_replay(store, result))
    finally:
        store.close()
    assert again.summaries() == [summary]


def test_the_sample_is_a_seeded_spread_without_the_cases_timed_alone():
    first = request_sample(1000, 200, np.array([3, 5, 7]))
    assert np.array_equal(first, request_sample(1000, 200, np.array([3, 5, 7])))
    assert len(set(first.tolist())) == 200 and not {3, 5, 7} & set(first.tolist())
    # A prefix is the same whatever the size asked: a cut-short sample is found again.
    assert np.array_equal(request_sample(1000, 50, np.array([3, 5, 7])), first[:50])
    # Spread over the cases (newest first), not the newest 200.
    assert first.max() > 800 and first.min() < 200
    assert request_sample(10, 200, np.empty(0, np.int64)).size == 10


def test_replay_with_no_requests_keeps_the_batches_shares(prepared, versions):
    result = replay(prepared, [LocalOnnxTarget(versions[0])], batch_size=256, requests=0)
    (summary,) = result.summaries()
    assert summary.requests_timed == 0 and result.request_rows.size == 0
    assert result.to_json()["versions"][0]["latency_ms"]["per"] == "row of a batch"


def test_the_case_view_says_what_each_latency_is_a_time_of(qapp, prepared, versions):
    from app.gui.replay_models import ResultTableModel

    result = replay(prepared, [LocalOnnxTarget(versions[0])], batch_size=256)
    model = ResultTableModel()
    model.set_result(result)
    sent = int(result.request_rows[0])
    batched = next(i for i in range(len(prepared)) if i not in set(result.request_rows.tolist()))
    (alone,) = model.answers(sent)
    (shared,) = model.answers(batched)
    assert alone.latency_means.startswith("one request of its own")
    assert shared.latency_means.startswith("its share of its batch's time")
    assert alone.latency_ms == result.runs[0].latency_ms[sent]


def test_the_cli_takes_how_many_requests_to_time(capsys, demo_db, versions):
    from app.cli import main

    base = ["replay", "--db", str(demo_db), "--versions", str(versions[0]), "--no-save",
            "--limit", "300", "--json"]
    assert main([*base, "--requests", "0"]) == 0
    latency = json.loads(capsys.readouterr().out)["versions"][0]["latency_ms"]
    assert latency["per"] == "row of a batch" and latency["requests_timed"] == 0
    assert main([*base, "--requests", "50"]) == 0
    latency = json.loads(capsys.readouterr().out)["versions"][0]["latency_ms"]
    assert latency["per"] == "request" and latency["requests_timed"] == 50


def test_timing_every_case_alone_keeps_the_batched_figure(capsys, demo_db, versions):
    """--requests at or above the cases replaces every case's batch share by one call's time;
    every case also ran in a batch, so the batched figure stays, from the batches' times."""
    from app.cli import main

    base = ["replay", "--db", str(demo_db), "--versions", *map(str, versions[:2]), "--no-save",
            "--limit", "300", "--controls", "50", "--requests", "1000"]
    assert main([*base, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cases = doc["failures"] + doc["controls"]
    for version in doc["versions"]:
        latency = version["latency_ms"]
        assert latency["requests_timed"] == cases
        # A share of a batch of up to 350 rows: far below one request's time.
        assert latency["batched_ms_per_row"] is not None
        assert 0 < latency["batched_ms_per_row"] < latency["p50"]
    assert doc["requests_asked"] == 1000 and doc["requests_possible"] == cases
    saved = [a for a in base if a != "--no-save"]
    assert main(saved) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("wine-v")][:2]
    assert all(row[-1] != "-" for row in rows)
    assert (f"p50/p95 of {cases} requests per version, one case each, the versions taking "
            f"turns ({cases} of the 1000 requests asked: one per case)") in out
    # Saved, it reads back the same: the batched figure and the requests asked are kept.
    assert main(["replay", "--db", str(demo_db), "--show", "latest"]) == 0
    shown = capsys.readouterr().out
    assert [line for line in shown.splitlines() if line.startswith(("wine-v", "latency:"))] \
        == [line for line in out.splitlines() if line.startswith(("wine-v", "latency:"))]


def test_the_batched_figure_is_the_median_share_of_the_batches(prepared, versions):
    # With no request timed alone, the latency column is the batches' shares as they came.
    result = replay(prepared, [LocalOnnxTarget(versions[0])], batch_size=100, requests=0)
    run = result.runs[0]
    assert run.batched_ms_per_row == pytest.approx(float(np.median(run.latency_ms)))
    assert result.summaries()[0].batched_ms_per_row == pytest.approx(run.batched_ms_per_row)
    assert result.to_json()["requests_asked"] is None  # the library was given no --requests


def test_a_capped_request_count_names_the_slow_cases_timed_alone(capsys, tmp_path, versions):
    from app.cli import main
    from tests.replay.conftest import record_stream

    db = tmp_path / "slow.db"
    record_stream(db, versions[0], rows=400, extra="&slo_ms=0.000001")  # every capture SLOW
    base = ["replay", "--db", str(db), "--versions", str(versions[0]), "--no-save",
            "--controls", "0", "--requests", "5000"]
    assert main([*base, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    possible, slow = doc["requests_possible"], doc["failures"] - doc["requests_possible"]
    assert possible > 0 and slow > 1  # mismatches and NaN rows beside the SLOW ones
    (version,) = doc["versions"]
    assert version["latency_ms"]["requests_timed"] == possible
    assert version["latency_ms"]["batched_ms_per_row"] is not None
    assert main(base) == 0
    assert (f"({possible} of the 5000 requests asked: every case but the {slow} SLOW ones, "
            "timed alone against their SLO)") in capsys.readouterr().out
