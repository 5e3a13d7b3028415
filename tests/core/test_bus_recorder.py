"""Bus and recorder: nothing committed is lost, nothing dropped is silent."""

from __future__ import annotations

import threading

import pytest

from app.core.bus import Bus
from app.core.domain import Metric, Sample
from app.core.recorder import Recorder
from app.core.store import Store
from tests.helpers import wait_until


def _samples(endpoint: str, n: int, start: int = 0) -> list[Sample]:
    return [Sample(endpoint, start + i, "m", float(i)) for i in range(n)]


def test_a_full_bus_refuses_and_counts_per_endpoint():
    bus = Bus(capacity=10)
    accepted = sum(bus.put(s) for s in _samples("a", 8))
    accepted += bus.put_many(_samples("b", 5))
    assert accepted == 10
    assert bus.dropped_total == 3
    items, dropped = bus.drain()
    assert len(items) == 10 and dropped == {"b": 3}
    assert bus.drain() == ([], {})  # counts are handed over once


def test_a_producer_that_may_wait_hands_over_everything_in_order():
    """put_waiting (the tap's recording process) waits for room instead of refusing."""
    bus = Bus(capacity=3)
    items = _samples("a", 10)
    got: list[Sample] = []
    done = threading.Event()

    def drainer() -> None:
        while not done.is_set() or len(bus):
            got.extend(bus.drain()[0])

    t = threading.Thread(target=drainer)
    t.start()
    bus.put_waiting(items, poll_s=0.001)
    done.set()
    t.join(5)
    assert [s.value for s in got] == [float(i) for i in range(10)]
    assert bus.dropped_total == 0 and bus.accepted_total == 10


def test_the_recorder_commits_everything_before_it_tells_listeners(workspace):
    bus = Bus()
    recorder = Recorder(bus, lambda: Store(workspace), flush_interval_s=0.01)
    seen_in_db: list[tuple[int, int]] = []
    reader = Store(workspace)
    reader_lock = threading.Lock()

    def listener(batch):
        with reader_lock:  # the listener runs on the recorder thread; the reader is ours
            seen_in_db.append((len(batch.samples), reader.count_samples()))

    recorder.subscribe(listener)
    recorder.start()
    for k in range(20):
        bus.put_many(_samples("e", 500, k * 500))
    recorder.stop()
    with reader_lock:
        assert sum(n for n, _ in seen_in_db) == 10_000
        # At each callback the batch was already visible to another connection: committed.
        running = 0
        for n, visible in seen_in_db:
            running += n
            assert visible >= running
    assert reader.count_samples("e") == 10_000
    assert recorder.stats().committed_samples == 10_000
    reader.close()


def test_overflow_is_committed_as_a_visible_series(workspace):
    bus = Bus(capacity=100)
    bus.put_many(_samples("e", 130))
    recorder = Recorder(bus, lambda: Store(workspace))
    recorder.start()
    recorder.stop()
    s = Store(workspace)
    assert s.count_samples("e", "m") == 100
    _, dropped = s.values("e", Metric.DROPPED)
    assert dropped.sum() == 30
    assert recorder.stats().dropped == 30
    s.close()


def test_a_full_disk_delays_samples_but_loses_none(workspace):
    stores: list[Store] = []

    def cramped_store() -> Store:
        s = Store(workspace)
        s.db.execute("PRAGMA max_page_count = 1")  # no room to grow: "database or disk is full"
        stores.append(s)
        return s

    bus = Bus()
    recorder = Recorder(bus, cramped_store, flush_interval_s=0.01)
    recorder.start()
    bus.put_many(_samples("e", 3000))
    assert wait_until(lambda: recorder.stats().last_error is not None), \
        "the cramped store should have refused the batch"
    assert "full" in recorder.stats().last_error
    assert recorder.stats().backlog == 3000
    stores[0].db.execute("PRAGMA max_page_count = 1073741823")  # space is freed
    recorder.stop()
    assert recorder.stats().last_error is None
    s = Store(workspace)
    assert s.count_samples("e") == 3000
    s.close()


def test_a_recorder_on_an_unopenable_store_fails_at_start(tmp_path):
    recorder = Recorder(Bus(), lambda: Store(tmp_path / "missing" / "x.db"))
    with pytest.raises(Exception, match="does not exist"):
        recorder.start()


def test_a_disk_still_full_at_close_counts_what_it_could_not_write(workspace):
    """Stopping with the workspace still full: a short grace, then every item left is
    counted as dropped (the summary shows it), none vanishes without a word."""
    def cramped_store() -> Store:
        s = Store(workspace)
        s.db.execute("PRAGMA max_page_count = 1")
        return s

    bus = Bus()
    recorder = Recorder(bus, cramped_store, flush_interval_s=0.01, final_retry_s=0.3)
    recorder.start()
    bus.put_many(_samples("e", 3000))
    assert wait_until(lambda: recorder.stats().last_error is not None)
    bus.put_many(_samples("f", 500))  # arrives after the failures began
    recorder.stop()
    stats = recorder.stats()
    assert stats.dropped == 3500 and stats.backlog == 0
    assert "full" in (stats.last_error or "")


def test_an_item_no_workspace_can_hold_is_dropped_and_counted_and_the_rest_is_kept(workspace):
    """A time beyond 64 bits (from a remote agent's page) made SQLite raise OverflowError,
    which is no StoreError: it killed the recorder, and every endpoint stopped recording."""
    bus = Bus()
    recorder = Recorder(bus, lambda: Store(workspace), flush_interval_s=0.01)
    recorder.start()
    bus.put_many([*_samples("a", 10), Sample("agent", 2**70, Metric.LATENCY_MS, 1.0),
                  *_samples("b", 10)])
    assert wait_until(lambda: recorder.stats().committed_samples >= 20)
    bus.put_many(_samples("c", 10))  # still recording afterwards
    recorder.stop()
    assert recorder.stats().dropped == 1
    s = Store(workspace)
    try:
        assert [s.count_samples(e) for e in ("a", "b", "c")] == [10, 10, 10]
        assert s.count_samples("agent", Metric.DROPPED) == 1  # shown on its own plot
    finally:
        s.close()
