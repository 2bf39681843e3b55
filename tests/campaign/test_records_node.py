"""Records name the Ray node a campaign cell ran on; records written before the field read as
local (empty node)."""

from __future__ import annotations

import json

import pytest

from vlc.records import BenchRecord, RecordError, read_record, write_record


def _record(**more) -> BenchRecord:
    return BenchRecord(model="mlp", target="onnxruntime", precision="fp32", batch=1, machine="box", status="failed",
                       source_hash="abc", reason="compile failed", **more)


def test_node_round_trips_and_old_records_read_as_local(tmp_path):
    path = write_record(tmp_path, _record(node="9f88f21d0415"))
    assert json.loads(path.read_text())["node"] == "9f88f21d0415"
    assert read_record(path).node == "9f88f21d0415"

    data = json.loads(path.read_text())
    del data["node"]  # a record from before campaigns
    path.write_text(json.dumps(data))
    assert read_record(path).node == ""


def test_node_must_be_a_string(tmp_path):
    path = write_record(tmp_path, _record())
    data = json.loads(path.read_text())
    data["node"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="field 'node' must be a string"):
        read_record(path)
