"""Simplify: onnxsim when installed (and the graph fits in protobuf), else onnxscript's optimizer."""

from __future__ import annotations

from typing import Any

from vlc.frontend.export import TWO_GB, model_bytes

RUNTIME_FUSIONS = ("fuse_attention",)


def _domains(proto: Any) -> set[str]:
    return {node.domain or "ai.onnx" for node in proto.graph.node}


def simplify(model: Any) -> tuple[Any, str]:
    """Return the simplified onnx_ir Model and which simplifier ran (said in the output)."""
    import onnx_ir as ir
    import onnxscript.optimizer

    try:
        import onnxsim
    except ImportError:
        onnxsim = None
    if onnxsim is not None and model_bytes(model) < TWO_GB:
        proto = ir.serde.serialize_model(model)
        try:
            # The normalized graph feeds every target: keep it standard ONNX, never fused into
            # one runtime's contrib operators (onnxsim's attention fusion emits com.microsoft ops).
            simplified, ok = onnxsim.simplify(proto, skipped_optimizers=list(RUNTIME_FUSIONS))
        except Exception as exc:  # noqa: BLE001 - onnxsim rejects some graphs; the optimizer still normalizes them
            note = f"onnxscript optimizer (onnxsim failed: {type(exc).__name__})"
        else:
            added = _domains(simplified) - _domains(proto)
            if ok and not added:
                return ir.serde.deserialize_model(simplified), f"onnxsim {onnxsim.__version__}"
            note = ("onnxscript optimizer (onnxsim's check failed)" if not ok else
                    f"onnxscript optimizer (onnxsim added non-standard operators: {', '.join(sorted(added))})")
    elif onnxsim is None:
        note = "onnxscript optimizer (onnxsim not installed)"
    else:
        note = "onnxscript optimizer (graph over 2 GB, past onnxsim's limit)"
    onnxscript.optimizer.optimize(model)
    return model, note
