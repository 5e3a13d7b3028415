"""The agent's on-disk buffer on its own: numbering, trimming, pages bounded by count and size."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from app.core.agent_buffer import AgentBuffer, BufferError, capture_from_json
from app.core.domain import Capture, CaptureStatus, Sample, TensorBlob


def test_sequence_numbers_survive_trimming_and_the_gap_is_counted(tmp_path):
    buffer = AgentBuffer(tmp_path / "b.sqlite", max_items=10)
    buffer.write_batch([Sample("e", i, "m", float(i)) for i in range(25)], [])
    assert buffer.bounds() == (16, 25)
    page = buffer.page(0)
    assert [s[0] for s in page.samples] == list(range(16, 26))
    assert page.trimmed == 15 and page.next_seq == 25
    buffer.write_batch([Sample("e", 99, "m", 1.0)], [])
    assert buffer.page(25).samples == [(26, 99, "m", 1.0)]  # numbers never reused
    buffer.close()
    reopened = AgentBuffer(tmp_path / "b.sqlite", max_items=10)
    assert reopened.bounds() == (17, 26) and reopened.agent_id == page.agent_id


def test_a_page_of_big_captures_is_cut_by_size_and_keeps_exact_bytes(tmp_path):
    buffer = AgentBuffer(tmp_path / "b.sqlite")
    image = np.random.default_rng(0).random((1, 3, 64, 64)).astype(np.float32)  # 48 KiB
    caps = [Capture("e", i, 1.5, CaptureStatus.ERROR, (TensorBlob.from_array("x", image),),
                    request_id=f"r{i}", error="boom") for i in range(10)]
    buffer.write_batch([], caps)
    page = buffer.page(0, limit=1000, max_bytes=200_000)
    assert 1 <= len(page.captures) < 10 and page.next_seq == page.captures[-1][0]
    first = capture_from_json("agent+http://x", page.captures[0][1])
    assert first.request_id == "r0" and first.error == "boom"
    np.testing.assert_array_equal(first.inputs[0].to_array(), image)
    rest = buffer.page(page.next_seq, limit=1000, max_bytes=10**9)
    assert len(page.captures) + len(rest.captures) == 10


def test_a_file_that_is_not_a_buffer_is_refused_and_left_as_it_was(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")  # SQLite alone would take this as an empty database and overwrite it
    with pytest.raises(BufferError, match=r"notes\.txt is not an agent buffer"):
        AgentBuffer(notes)
    assert notes.read_text() == "x"
    other = tmp_path / "crm.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(BufferError, match="SQLite file but not an agent buffer"):
        AgentBuffer(other)
    conn = sqlite3.connect(other)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["customers"]
    conn.close()


def test_an_agent_whose_buffer_is_gone_answers_503_not_a_dropped_connection(
        tmp_path, caplog, monkeypatch):
    import httpx

    from app.core.agent_server import AgentHttpServer
    from app.core.bus import Bus
    from probes import ProbeError, open_probe

    buffer = tmp_path / "b.sqlite"
    AgentBuffer(buffer).close()
    server = AgentHttpServer(("127.0.0.1", 0), token="t" * 32, buffer_path=buffer, info={})
    server.serve_in_thread()
    try:
        buffer.unlink()
        for wal in tmp_path.glob("b.sqlite-*"):
            wal.unlink()
        with caplog.at_level("ERROR", logger="app.core.agent_server"):
            for _ in range(3):  # every pull of every dashboard fails alike
                answer = httpx.get(f"http://127.0.0.1:{server.server_address[1]}/v1/info",
                                   headers={"Authorization": "Bearer " + "t" * 32}, timeout=5)
            # A dashboard is told why, not only "HTTP 503".
            monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", "t" * 32)
            probe = open_probe(f"agent+http://127.0.0.1:{server.server_address[1]}", Bus())
            with probe.client() as client, \
                    pytest.raises(ProbeError, match="HTTP 503: the agent cannot read its buffer"):
                probe.pull_once(client)
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 503
    assert "cannot read its buffer" in answer.json()["error"]
    said = [r.getMessage() for r in caplog.records if "cannot read its buffer" in r.getMessage()]
    assert len(said) == 2  # the first failure at once, the other three at the close, counted
    assert "(2 more of this kind" in said[1]


def test_a_full_buffer_says_so_once_not_at_every_write(tmp_path, caplog):
    """Once full, trimming is the ring's steady state: one line when it starts, then the count
    of the trims not said (at close, or once in TRIM_LOG_EVERY_S). A line a write came ten
    times a second from every agent that had run long enough."""
    buf = AgentBuffer(tmp_path / "b.sqlite", max_items=10)
    with caplog.at_level("WARNING", logger="app.core.agent_buffer"):
        for i in range(50):
            buf.write_batch([Sample("e", i * 5 + k, "m", float(k)) for k in range(5)], [])
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and said[0].startswith("agent buffer full (--max-items 10)")
        assert buf.bounds()[1] - buf.bounds()[0] + 1 == 10  # still trimmed every time
        buf.close()
    said = [r.getMessage() for r in caplog.records]
    # 48 trims: the first said at once, the last in the closing line, 46 between them.
    assert len(said) == 2 and "(46 more of this kind since the last such line" in said[1]


def test_a_buffer_moved_away_keeps_its_items_and_a_new_one_starts_at_its_path(tmp_path,
                                                                              caplog):
    path = tmp_path / "b.sqlite"
    buf = AgentBuffer(path, check_every_s=0)  # looks at its path at every write
    buf.write_batch([Sample("e", i, "m", float(i)) for i in range(10)], [])
    old_id = buf.agent_id
    path.rename(tmp_path / "old.sqlite")  # its -wal and -shm stay under the old name
    with caplog.at_level("WARNING", logger="app.core.agent_buffer"):
        buf.write_batch([Sample("e", 10, "m", 10.0)], [])
        buf.write_batch([Sample("e", 11, "m", 11.0)], [])
    buf.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"agent buffer {path} was deleted or moved away; started a new one there "
        "(a dashboard pulls it from its start)"]
    moved = sqlite3.connect(tmp_path / "old.sqlite")  # what was in its WAL went in with it
    assert moved.execute("SELECT count(*), max(seq) FROM items").fetchone() == (10, 10)
    moved.close()
    fresh = AgentBuffer(path, readonly=True)
    assert fresh.agent_id != old_id
    assert fresh.page(0).samples == [(1, 10, "m", 10.0), (2, 11, "m", 11.0)]
    fresh.close()


def test_a_new_buffer_is_readable_by_its_user_alone(tmp_path):
    # It holds production inputs and outputs; the default umask made it 0644.
    buf = AgentBuffer(tmp_path / "b.sqlite")
    buf.write_batch([Sample("e", 1, "m", 1.0)], [])
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    buf.close()
    assert modes["b.sqlite"] == 0o600
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes  # -wal and -shm too


@pytest.mark.parametrize("replacement", ["symlink", "other_user", "group_writable"])
def test_a_file_someone_else_put_at_its_path_is_not_written_or_served(tmp_path, caplog,
                                                                      replacement):
    """In a shared folder another user could put a file at the buffer's path once the old
    one was moved away (log rotation): the agent wrote production captures into it."""
    import os

    path = tmp_path / "b.sqlite"
    buf = AgentBuffer(path, check_every_s=0)
    buf.write_batch([Sample("e", 1, "m", 1.0)], [])
    path.rename(tmp_path / "old.sqlite")
    planted = tmp_path / "planted.sqlite"
    AgentBuffer(planted).close()  # a well-formed buffer: only whose it is differs
    if replacement == "symlink":
        path.symlink_to(planted)
    else:
        planted.rename(path)
        if replacement == "other_user":
            if os.geteuid() != 0:
                pytest.skip("giving a file to another user needs root")
            os.chown(path, 65534, 65534)
        else:
            path.chmod(0o666)
    target = planted if replacement == "symlink" else path
    before = target.read_bytes()
    with caplog.at_level("ERROR", logger="app.core.agent_buffer"):
        buf.write_batch([Sample("e", 2, "m", 2.0)], [])
        buf.write_batch([Sample("e", 3, "m", 3.0)], [])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "does not write production captures into it" in said[0]
    assert [s[1] for s in buf.page(0).samples] == [1, 2, 3]  # it went on in its own file
    buf.close()
    assert target.read_bytes() == before  # not a byte of the captures went into it
    assert not (tmp_path / "planted.sqlite-wal").exists()
