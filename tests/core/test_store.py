"""The workspace file: schema steps, batched writes, exact round trips, downsampled history."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.core import store as store_module
from app.core.domain import Capture, CaptureStatus, Sample, TensorBlob
from app.core.store import Store, StoreError


def test_a_new_workspace_gets_every_schema_step_once(workspace):
    Store(workspace).close()
    s = Store(workspace)  # reopening must not re-run steps
    assert s.applied_migrations() == [name for name, _ in store_module.MIGRATIONS]
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def test_a_workspace_from_a_newer_version_is_refused_with_advice(workspace):
    Store(workspace).close()
    conn = sqlite3.connect(workspace)
    conn.execute("INSERT INTO migrations (step, name, applied_ns) VALUES (99, 'future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"newer ProbeScope.*future.*upgrade"):
        Store(workspace)


def test_a_schema_step_that_fails_leaves_the_workspace_as_it_was(workspace, monkeypatch):
    def half_done(db) -> None:
        db["half"].create({"x": int})
        raise sqlite3.OperationalError("disk I/O error")

    steps = store_module.MIGRATIONS
    monkeypatch.setattr(store_module, "MIGRATIONS", [*steps, ("later_step", half_done)])
    with pytest.raises(StoreError, match="disk I/O error"):
        Store(workspace)  # a new file: every step, then the failing one
    conn = sqlite3.connect(workspace)
    assert conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall() == []
    conn.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", steps)
    Store(workspace).close()  # an older workspace: only the new step, rolled back alone
    monkeypatch.setattr(store_module, "MIGRATIONS", [*steps, ("later_step", half_done)])
    with pytest.raises(StoreError, match="disk I/O error"):
        Store(workspace)
    monkeypatch.setattr(store_module, "MIGRATIONS", steps)
    s = Store(workspace, readonly=True)
    assert s.applied_migrations() == [name for name, _ in steps]
    assert "half" not in s.db.table_names()
    s.close()


def test_an_output_path_naming_a_workspace_in_use_is_refused_unread(tmp_path):
    """`--export` or `--out` given this process's own live workspace: refused without even
    opening it, since closing it would drop the recorder's locks (see the WAL test above)."""
    import subprocess
    import sys

    from app.core.output_files import refusal

    db = tmp_path / "w.db"
    writer = Store(db)
    try:
        writer.write_batch([Sample("system:", 1, "cpu", 1.0)], [])
        assert "is a database in use" in (refusal(db, (b"id,",), "a replay export") or "")
        other = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                 "c.execute('SELECT count(*) FROM samples').fetchone(); c.close()")
        subprocess.run([sys.executable, "-c", other, str(db)], check=True, timeout=60)
        assert (tmp_path / "w.db-wal").exists()
    finally:
        writer.close()


@contextlib.contextmanager
def read_only_copy(workspace: Path, size: str = "1m") -> Iterator[Path]:
    """``workspace`` copied onto a tmpfs (of ``size``) remounted read-only; the test is
    skipped where the machine allows no mount (not root). Unmounting at the end proves
    nothing is left open."""
    mnt = workspace.parent / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs a tmpfs mount (root)")
    try:
        shutil.copy(workspace, mnt / workspace.name)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt / workspace.name
    finally:
        assert subprocess.run(["umount", str(mnt)]).returncode == 0


def test_a_workspace_on_a_read_only_disk_says_so(tmp_path, capsys):
    """SQLite's own words, "unable to open database file", did not say why."""
    from app.cli import main

    Store(tmp_path / "w.db").close()
    with read_only_copy(tmp_path / "w.db") as db:
        assert main(["watch", "system:", "--seconds", "1", "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "the file is read-only" in err


def test_a_damaged_capture_is_a_store_error_naming_it(workspace):
    """Bytes no writer of ours left (a disk fault, another tool) raised CodecError or a bad
    status ValueError into the window's history worker, which printed a traceback."""
    s = Store(workspace)
    try:
        s.write_batch([], [Capture("onnx:m", 5, 1.0, CaptureStatus.OK,
                                   inputs=(TensorBlob.from_array("x", np.ones((1, 3))),))])
        (cid,) = [c.id for c in s.captures()]
        for column, value in (("inputs", b"\x00garbage"), ("status", "exploded")):
            good = s.db.execute(f"SELECT {column} FROM captures WHERE id = ?", [cid]).fetchone()
            s.db.execute(f"UPDATE captures SET {column} = ? WHERE id = ?", [value, cid])
            with pytest.raises(StoreError, match=f"capture {cid} in the workspace is damaged"):
                s.capture(cid)
            s.db.execute(f"UPDATE captures SET {column} = ? WHERE id = ?", [good[0], cid])
        assert s.capture(cid) is not None
    finally:
        s.close()


def test_captures_from_before_the_sampled_flag_count_as_sampled(workspace):
    """An older workspace has no captures.sampled column: read-only (not migrated) or after
    the step adds it (NULL), its captures are all in the random sample, as they were taken."""
    s = Store(workspace)
    s.write_batch([], [Capture("onnx:m", 5, 1.0, CaptureStatus.OK,
                               inputs=(TensorBlob.from_array("x", np.ones((1, 3))),))])
    s.close()
    conn = sqlite3.connect(workspace)
    conn.execute("ALTER TABLE captures DROP COLUMN sampled")
    conn.execute("DELETE FROM migrations WHERE name = 'captures_sampled'")
    conn.commit()
    conn.close()
    for readonly in (True, False):
        s = Store(workspace, readonly=readonly)
        try:
            assert [ts for ts, _, _ in s.capture_inputs("onnx:m", sampled_only=True)] == [5]
        finally:
            s.close()


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "no" / "such" / "x.db")


def test_a_file_that_is_not_sqlite_is_a_clear_error_and_left_as_it_was(tmp_path):
    # A long file SQLite itself refuses; a short one it would take as empty and overwrite.
    for text in ("these are my notes, not a database" * 100, "todo: call Ana"):
        bogus = tmp_path / "notes.db"
        bogus.write_text(text)
        for readonly in (False, True):
            with pytest.raises(StoreError, match=r"notes\.db is not a ProbeScope workspace"):
                Store(bogus, readonly=readonly)
        assert bogus.read_text() == text
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)


def test_opening_a_live_workspace_again_keeps_its_wal_when_another_process_closes(tmp_path):
    """A second Store on a workspace this process is writing (a second probe attached) must
    not drop the first one's file locks: then another process closing its connection takes
    itself for the last one and deletes the live WAL, and a kill -9 loses what was committed
    since the last checkpoint."""
    import subprocess
    import sys

    db = tmp_path / "w.db"
    writer = Store(db)
    try:
        writer.write_batch([Sample("system:", 1, "cpu", 1.0)], [])
        second = Store(db)  # what Monitor.attach does for each endpoint it registers
        second.close()
        wal = tmp_path / "w.db-wal"
        assert wal.exists()
        other = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                 "c.execute('SELECT count(*) FROM samples').fetchone(); c.close()")
        subprocess.run([sys.executable, "-c", other, str(db)], check=True, timeout=60)
        assert wal.exists()  # still ours: the other process saw it was not the last
        writer.write_batch([Sample("system:", 2, "cpu", 2.0)], [])
    finally:
        writer.close()
    reader = Store(db, readonly=True)
    try:
        assert reader.count_samples() == 2
    finally:
        reader.close()


def test_someone_elses_sqlite_database_gets_none_of_our_tables(tmp_path):
    other = tmp_path / "crm.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"SQLite file but not a ProbeScope workspace \(its "
                                             r"tables: customers\)"):
            Store(other, readonly=readonly)
    conn = sqlite3.connect(other)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert tables == ["customers"] and mode == "delete"


def test_samples_round_trip_in_time_order(workspace):
    s = Store(workspace)
    samples = [Sample("onnx:m", ts, "latency_ms", ts / 10) for ts in (30, 10, 20)]
    s.write_batch(samples, [])
    ts, values = s.values("onnx:m", "latency_ms")
    assert ts.tolist() == [10, 20, 30]
    assert values.tolist() == [1.0, 2.0, 3.0]
    assert s.count_samples("onnx:m") == 3
    assert s.values("onnx:other", "latency_ms")[0].size == 0
    s.close()


def test_history_buckets_agree_with_numpy(workspace):
    rng = np.random.default_rng(1)
    ts = np.sort(rng.integers(0, 10_000_000_000, 20_000))
    values = rng.standard_normal(len(ts))
    s = Store(workspace)
    s.write_batch([Sample("e", int(t), "m", float(v)) for t, v in zip(ts, values, strict=True)], [])
    h = s.history("e", "m", 0, 10_000_000_000, buckets=100)
    assert len(h) == 100
    width = 10_000_000_000 // 100
    for k in (0, 37, 99):
        inside = values[(ts >= k * width) & (ts < (k + 1) * width)]
        assert h.ts_ns[k] == k * width
        assert h.count[k] == len(inside)
        assert h.vmin[k] == pytest.approx(inside.min())
        assert h.vmax[k] == pytest.approx(inside.max())
        assert h.mean[k] == pytest.approx(inside.mean())
    assert h.count.sum() == len(ts)
    s.close()


def test_captures_keep_their_exact_bytes(workspace):
    x = np.array([[1.5, np.nan, -0.0, 3e38]], dtype=np.float32)
    y = np.array([[0.1, 0.2, 0.7]], dtype=np.float32)
    capture = Capture("onnx:m", 5, 0.25, CaptureStatus.NON_FINITE,
                      (TensorBlob.from_array("features", x),),
                      (TensorBlob.from_array("probabilities", y),),
                      request_id="r1", label="2", prediction="2", confidence=0.7,
                      model_version="1.0.0")
    s = Store(workspace)
    s.write_batch([], [capture])
    (stored,) = s.captures("onnx:m", failed=True)
    back = stored.capture
    assert back.inputs[0].to_array().tobytes() == x.tobytes()
    assert back.inputs[0].to_array().dtype == np.float32
    assert back.outputs[0].to_array().shape == (1, 3)
    assert (back.status, back.request_id, back.model_version) == (
        CaptureStatus.NON_FINITE, "r1", "1.0.0")
    assert s.count_captures(failed=False) == 0
    assert s.capture(stored.id) == stored
    s.close()


def test_a_failed_batch_leaves_nothing_half_written(workspace):
    s = Store(workspace)
    s.write_batch([Sample("e", 1, "m", 1.0)], [])
    s.db.execute("PRAGMA max_page_count = 1")  # the file cannot grow: like a full disk
    big = [Sample(f"e{i}", i, "m", 1.0) for i in range(5000)]
    with pytest.raises(StoreError, match="full"):
        s.write_batch(big, [])
    s.db.execute("PRAGMA max_page_count = 1073741823")
    assert s.count_samples() == 1
    s.write_batch(big, [])  # and the ids forgotten in the rollback are made again
    assert s.count_samples() == 5001
    s.close()


def test_looking_up_request_ids_walks_the_request_id_index(workspace):
    """An import asks which of its ids are there already, 500 at a time: by the endpoint's
    time index that read every capture of the endpoint per chunk, and an import into a big
    endpoint slowed to a crawl."""
    from app.core.domain import Capture, CaptureStatus

    s = Store(workspace)
    try:
        s.write_batch([], [Capture(endpoint="log:p", ts_ns=i + 1, latency_ms=1.0,
                                   status=CaptureStatus.OK, request_id=f"r{i}")
                           for i in range(50)])
        seen: list[str] = []
        s.db.conn.set_trace_callback(seen.append)
        assert s.existing_request_ids("log:p", ["r3", "r7", "nope"]) == {"r3", "r7"}
        assert len(s.captures_for_labels(["r3"], "log:p")) == 1
        s.db.conn.set_trace_callback(None)
        for sql in [q for q in seen if "request_id IN" in q]:
            plan = " ".join(r[3] for r in s.db.conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "idx_captures_request_id" in plan, plan
    finally:
        s.close()


def test_a_workspace_on_a_read_only_disk_can_still_be_read(tmp_path, capsys):
    """A snapshot or backup share: reading (incidents, reports) needs no write. SQLite's
    WAL mode wants a -shm file beside the workspace even to read, which such a folder
    cannot hold."""
    from app.cli import main
    from app.core.domain import Metric

    store = Store(tmp_path / "w.db")
    store.write_batch([Sample("onnx:a.onnx", 1_000 + i, Metric.LATENCY_MS, 1.0)
                       for i in range(10)], [])
    store.close()
    with read_only_copy(tmp_path / "w.db") as db:
        reader = Store(db, readonly=True)
        try:
            assert reader.count_samples("onnx:a.onnx") == 10
        finally:
            reader.close()
        assert main(["incidents", "--db", str(db)]) == 0
        assert "cannot open" not in capsys.readouterr().err


def test_sampled_values_of_a_long_series_keep_its_quantiles(workspace):
    """An incident's p95/p99 in the report come from at most ``at_most`` rows: a spread-out
    pick, not the first rows, and not in step with series written interleaved."""
    rng = np.random.default_rng(7)
    latency = rng.lognormal(0.0, 0.6, 60_000)
    samples = []
    for i, v in enumerate(latency):  # interleaved with a second series, as probes write
        samples += [Sample("e", 1_000 + i, "latency_ms", float(v)),
                    Sample("e", 1_000 + i, "failure", 1.0)]
    store = Store(workspace)
    store.write_batch(samples, [])
    picked = store.sampled_values("e", "latency_ms", 0, 10**12, at_most=20_000)
    whole = store.sampled_values("e", "latency_ms", 0, 10**12, at_most=100_000)
    store.close()
    assert len(whole) == 60_000
    assert 18_000 <= len(picked) <= 22_000
    for q in (50, 95, 99):
        assert np.percentile(picked, q) == pytest.approx(np.percentile(latency, q), rel=0.05)
