"""Result records: round trip, merging, and malformed files rejected with the file and field named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vlc.records import (
    RECORD_SUFFIX,
    SCHEMA_VERSION,
    Accuracy,
    BenchRecord,
    RecordError,
    load_records,
    read_record,
    record_path,
    write_record,
)

FIXTURES = Path(__file__).parent / "fixtures"


def ok_record(**changes) -> BenchRecord:
    record = BenchRecord(model="mlp", target="onnxruntime", precision="fp32", batch=8, machine="box",
                         status="ok", source_hash="abc123", device="cpu", device_name="Some CPU",
                         latency_ms={"count": 5, "min": 1.0, "max": 1.4, "mean": 1.1, "median": 1.05,
                                     "p90": 1.3, "p95": 1.35, "p99": 1.39, "std": 0.1, "cv": 0.09},
                         throughput_per_s=7619.0, includes_transfers=True,
                         accuracy=Accuracy(True, "torch", 1e-6, 1e-7, 0.99999999,
                                           {"min_cosine": 0.99999, "atol": 1e-4, "rtol": 1e-3},
                                           [{"name": "y", "max_abs": 1e-6, "passed": True}]))
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def test_round_trip_through_a_results_directory(tmp_path):
    record = ok_record()
    path = write_record(tmp_path, record)
    assert path == record_path(tmp_path, record)
    assert path.name == f"onnxruntime-fp32-b8{RECORD_SUFFIX}" and path.parent.name == "mlp"
    again = read_record(path)
    assert again == record
    assert again.accuracy is not None and again.accuracy.passed
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


def test_non_finite_numbers_are_written_as_null(tmp_path):
    record = ok_record(accuracy=Accuracy(False, "torch", float("nan"), float("nan"), float("nan"),
                                         outputs=[{"name": "y", "max_abs": float("inf")}]))
    path = write_record(tmp_path, record)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_record(path).accuracy.max_abs is None  # type: ignore[union-attr]


def test_unavailable_record_needs_a_reason(tmp_path):
    with pytest.raises(RecordError, match="field 'reason'"):
        write_record(tmp_path, BenchRecord("mlp", "trt", "fp16", 1, "box", "unavailable", "abc"))
    write_record(tmp_path, BenchRecord("mlp", "trt", "fp16", 1, "box", "unavailable", "abc",
                                       reason="TensorRT is not installed"))


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / f"bad{RECORD_SUFFIX}"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("change, field, problem", [
    (lambda d: d.pop("batch"), "batch", "is missing"),
    (lambda d: d.update(batch="8"), "batch", "must be an integer"),
    (lambda d: d.update(batch=0), "batch", "must be a positive integer"),
    (lambda d: d.update(batch=True), "batch", "must be an integer"),
    (lambda d: d.update(status="done"), "status", "must be one of"),
    (lambda d: d.update(schema="something.else"), "schema", "must be 'vlc.bench.result'"),
    (lambda d: d.update(machine=" "), "machine", "is empty"),
    (lambda d: d["latency_ms"].pop("median"), "latency_ms.median", "must be a number"),
    (lambda d: d.update(latency_ms=None), "latency_ms", "is required when status is 'ok'"),
    (lambda d: d["accuracy"].update(passed="yes"), "accuracy.passed", "must be true/false"),
    (lambda d: d.update(colour="blue"), "colour", "is not a field"),
    (lambda d: d.update(throughput_per_s="fast"), "throughput_per_s", "must be"),
])
def test_malformed_records_name_the_file_and_field(tmp_path, change, field, problem):
    data = ok_record().to_json()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(RecordError) as info:
        read_record(path)
    message = info.value.line()
    assert str(path) in message
    assert f"field '{field}'" in message
    assert problem in message


def test_invalid_json_and_non_objects_are_rejected(tmp_path):
    with pytest.raises(RecordError, match="not valid JSON"):
        read_record(_write(tmp_path, "{not json"))
    with pytest.raises(RecordError, match="expected a JSON object"):
        read_record(_write(tmp_path, "[1, 2]"))


def test_newer_schema_version_asks_for_an_upgrade(tmp_path):
    data = ok_record().to_json()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(RecordError, match="upgrade vlc"):
        read_record(_write(tmp_path, data))


def test_a_malformed_file_inside_a_results_directory_stops_the_merge(tmp_path):
    shutil.copytree(FIXTURES / "cpu-box", tmp_path / "cpu-box")
    victim = next((tmp_path / "cpu-box").rglob(f"*{RECORD_SUFFIX}"))
    data = json.loads(victim.read_text())
    del data["source_hash"]
    victim.write_text(json.dumps(data))
    with pytest.raises(RecordError) as info:
        load_records([tmp_path])
    assert str(victim) in info.value.line() and "'source_hash'" in info.value.line()


def test_load_merges_machines_and_keeps_the_newest_record_of_a_cell(tmp_path):
    loaded = load_records([FIXTURES / "a10-box", FIXTURES / "h100-box", FIXTURES / "cpu-box"])
    assert {r.machine for r in loaded.records} == {"a10-box", "h100-box", "cpu-box"}
    assert loaded.files == len(loaded.records) and not loaded.replaced
    old = ok_record(created="2026-01-01T00:00:00+00:00")
    new = ok_record(created="2026-02-01T00:00:00+00:00", throughput_per_s=9000.0)
    write_record(tmp_path / "a", old)
    write_record(tmp_path / "b", new)
    merged = load_records([tmp_path / "a", tmp_path / "b"])
    assert len(merged.records) == 1 and merged.records[0].throughput_per_s == 9000.0
    assert merged.replaced and "using the newer" in merged.replaced[0]


def test_other_json_files_in_a_results_directory_are_not_read(tmp_path):
    write_record(tmp_path, ok_record())
    (tmp_path / "manifest.json").write_text("{}")
    assert len(load_records([tmp_path]).records) == 1


def test_missing_results_path_is_one_clear_error(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        load_records([tmp_path / "nope"])


def test_raw_samples_are_kept_bounded_and_in_order(tmp_path):
    from vlc.records import SAMPLES_KEPT, kept_samples
    from vlc.timing import LatencyStats

    stats = LatencyStats.from_samples([3.0, 1.0, 2.0])
    assert stats.samples == (3.0, 1.0, 2.0) and "samples" not in stats.to_json()  # the summary stays a summary
    assert kept_samples(stats.samples) == {"stride": 1, "values": [3.0, 1.0, 2.0]}
    many = [float(i) for i in range(2 * SAMPLES_KEPT + 5)]
    kept = kept_samples(many)
    assert kept["stride"] == 3 and kept["values"][:3] == [0.0, 3.0, 6.0] and len(kept["values"]) <= SAMPLES_KEPT
    assert kept_samples([]) is None

    record = ok_record(samples_ms=kept_samples([1.0, 1.1, 0.9, 1.05, 1.2]))
    assert read_record(write_record(tmp_path, record)).samples_ms == record.samples_ms


@pytest.mark.parametrize("samples, field", [({"values": [1.0, -2.0], "stride": 1}, "samples_ms.values"),
                                            ({"values": [1.0], "stride": 0}, "samples_ms.stride"),
                                            ({"values": "1,2", "stride": 1}, "samples_ms.values")])
def test_malformed_samples_are_refused(tmp_path, samples, field):
    path = write_record(tmp_path, ok_record())
    data = json.loads(path.read_text())
    data["samples_ms"] = samples
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=f"field '{field}'"):
        read_record(path)


def test_a_built_record_says_what_was_built_and_why_it_was_not_timed(tmp_path):
    built = ok_record(status="built", latency_ms=None, throughput_per_s=None, accuracy=None,
                      reason="not timed: no node offers vlc/trt-sm86",
                      build={"machine": "cpu-box", "seconds": 4.8, "main_file": "model.engine"})
    assert read_record(write_record(tmp_path, built)).build["main_file"] == "model.engine"
    for change, field in (({"build": {}}, "build"), ({"reason": ""}, "reason")):
        data = built.to_json() | change
        with pytest.raises(RecordError, match=f"field '{field}'"):
            BenchRecord.from_json(data)
