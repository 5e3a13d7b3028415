"""``watch --payload FILE`` beside a URI that names its own rows with ``payload=``: the URI's
file would win at the probe, so rows other than the ones typed would be sent without a word.
Two different files are refused, one line naming both; one file named twice is no clash."""

from __future__ import annotations

import json
from pathlib import Path

from app.cli import main
from app.core.store import Store
from tests.conftest import DEMO


def test_a_payload_flag_and_another_payload_in_the_uri_are_refused(workspace, capsys):
    uri = f"onnx:{DEMO / 'wine-v1.onnx'}?provider=cpu&payload={DEMO / 'production.csv'}"
    flag = DEMO / "reference.csv"
    assert main(["watch", uri, "--payload", str(flag), "--seconds", "1",
                 "--db", str(workspace)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert (f"--payload {flag} and payload={DEMO / 'production.csv'} in {uri} name "
            "different files") in captured.err
    assert not workspace.exists()  # refused before anything was recorded


def test_one_payload_file_named_both_ways_is_sent(workspace, tmp_path: Path, capsys):
    link = tmp_path / "rows.csv"
    link.symlink_to(DEMO / "reference.csv")  # another spelling of the same file
    uri = f"onnx:{DEMO / 'wine-v1.onnx'}?provider=cpu&payload={DEMO / 'reference.csv'}"
    assert main(["watch", uri, "--payload", str(link), "--seconds", "1", "--rate", "50",
                 "--db", str(workspace), "--json"]) == 0
    (endpoint,) = json.loads(capsys.readouterr().out)["endpoints"]
    assert endpoint["requests"] > 0
    store = Store(workspace, readonly=True)
    try:
        ids = {c.capture.request_id for c in store.captures(uri)}
    finally:
        store.close()
    assert ids and all(i.startswith("ref-") for i in ids)
