"""Simplify: onnxsim when installed (and the graph fits in protobuf), else onnxscript's optimizer."""

from __future__ import annotations

from typing import Any

from vlc.frontend.export import TWO_GB, model_bytes


def simplify(model: Any) -> tuple[Any, str]:
    """Return the simplified onnx_ir Model and which simplifier ran (said in the output)."""
    import onnx_ir as ir
    import onnxscript.optimizer

    try:
        import onnxsim
    except ImportError:
        onnxsim = None
    if onnxsim is not None and model_bytes(model) < TWO_GB:
        try:
            simplified, ok = onnxsim.simplify(ir.serde.serialize_model(model))
        except Exception as exc:  # onnxsim rejects some graphs; the optimizer still normalizes them
            note = f"onnxscript optimizer (onnxsim failed: {type(exc).__name__})"
        else:
            if ok:
                return ir.serde.deserialize_model(simplified), f"onnxsim {onnxsim.__version__}"
            note = "onnxscript optimizer (onnxsim's check failed)"
    elif onnxsim is None:
        note = "onnxscript optimizer (onnxsim not installed)"
    else:
        note = "onnxscript optimizer (graph over 2 GB, past onnxsim's limit)"
    onnxscript.optimizer.optimize(model)
    return model, note
