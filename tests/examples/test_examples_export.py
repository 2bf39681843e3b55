"""Each example exports with the dynamo exporter and matches PyTorch in ONNX Runtime (fp32)."""

from __future__ import annotations

from vlc.frontend.export import export_model
from vlc.frontend.pipeline import parity_check

BATCHES = (1, 3)  # neither is the batch the exporter traces with (2): the axis stays dynamic


def test_onnx_runtime_matches_torch_at_two_batch_sizes(name, test_source, tmp_path):
    source = test_source(name)
    path = tmp_path / f"{name}.onnx"
    exported = export_model(source, path, exporter="dynamo")
    model = exported.model
    assert [v.name for v in model.graph.inputs] == [s.name for s in source.inputs]
    assert [v.name for v in model.graph.outputs] == source.output_names
    for batch in BATCHES:
        report = parity_check(source, path, batch)  # compare_outputs at the fp32 tolerance
        assert report.passed, (batch, [(o.name, o.reason) for o in report.outputs])
        assert all(o.shape[0] == batch for o in report.outputs)
