"""Normalisation of a user's ONNX file before the front end rewrites it.

ONNX files come from many producers and IR versions. Two things of older files break the
front end's later steps:
- IR 3 (the classic model zoo, caffe2 and early PyTorch converters) requires every initializer
  to be listed as a graph input. Once a rewrite drops one from the inputs, onnx.checker refuses
  the graph ("X in initializer but not in graph input"). From IR 4 on, initializers need not be
  inputs, so the file is lifted to the IR version its opset needs (at least 4).
- Initializers listed as graph inputs are weights, not inputs a user feeds: left as inputs they
  would become 50 or 800 "inputs" of the model's signature, its generated data and its
  shape ranges. They are kept as initializers only.
- Opsets below 7 (early converters) have no kernels in ONNX Runtime ("Could not find an
  implementation for AveragePool(1)"), which every target uses as its reference: such files are
  converted to opset 11 with onnx's version converter.
- Dynamic axes written as dim_value -1 (paddle2onnx) or as the dim_param '?' are no size and
  no shared symbol: they become unnamed dynamic axes, as an exporter that names nothing writes.
"""

from __future__ import annotations

from typing import Any

from vlc.signature import UNNAMED_PARAMS

IR_WITHOUT_LISTED_INITIALIZERS = 4  # the first IR version that allows unlisted initializers
OLDEST_RUNNABLE_OPSET = 7  # ONNX Runtime has no kernels below it
UPGRADE_OPSET = 11


def normalize_onnx_input(model: Any) -> tuple[Any, list[str]]:
    """Normalise an onnx_ir Model loaded from a user's file; return it and what was changed."""
    notes: list[str] = []
    model = _upgrade_old_opset(model, notes)
    dropped = _drop_initializer_inputs(model.graph)
    if dropped:
        notes.append(f"{dropped} initializer(s) listed as graph inputs kept as weights only")
    unnamed = _unname_unknown_dims(model.graph)
    if unnamed:
        notes.append(f"{unnamed} axis/axes given as -1 or '?' made dynamic")
    before = model.ir_version
    wanted = _ir_version_for(model)
    if before is None or before < wanted:
        model.ir_version = wanted
        notes.append(f"IR version {before} -> {wanted}")
    return model, notes


def _upgrade_old_opset(model: Any, notes: list[str]) -> Any:
    """An opset-6-or-older model converted to UPGRADE_OPSET (unchanged when the converter refuses)."""
    import onnx
    import onnx_ir as ir

    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    if opset is None or opset >= OLDEST_RUNNABLE_OPSET:
        return model
    proto = ir.serde.serialize_model(model)
    if proto.ir_version < IR_WITHOUT_LISTED_INITIALIZERS:  # the converter's checker wants IR 4 rules
        _list_initializers_as_inputs(proto)
    try:
        converted = onnx.version_converter.convert_version(proto, UPGRADE_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises several types; ORT says the rest
        notes.append(f"opset {opset} kept: onnx's version converter refused it ({type(exc).__name__})")
        return model
    notes.append(f"opset {opset} -> {UPGRADE_OPSET} (onnx.version_converter)")
    return ir.serde.deserialize_model(converted)


def _list_initializers_as_inputs(proto: Any) -> None:
    """IR 3 requires initializers among the graph inputs: add those a file left out."""
    import onnx

    listed = {v.name for v in proto.graph.input}
    for init in proto.graph.initializer:
        if init.name not in listed:
            proto.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims))


def _drop_initializer_inputs(graph: Any) -> int:
    """Remove the graph inputs that are initializers; return how many were removed."""
    initializers = graph.initializers
    listed = [v for v in graph.inputs if v.name in initializers]
    for value in listed:
        graph.inputs.remove(value)
    return len(listed)


def _unname_unknown_dims(graph: Any) -> int:
    """Negative sizes and '?' names of graph inputs/outputs -> unnamed dynamic axes; return how many."""
    import onnx_ir as ir

    changed = 0
    for value in list(graph.inputs) + list(graph.outputs):
        if value.shape is None:
            continue
        dims = []
        for dim in value.shape.dims:
            unknown = (isinstance(dim, int) and dim < 0) or (
                isinstance(dim, ir.SymbolicDim) and dim.value is not None and dim.value in UNNAMED_PARAMS)
            changed += unknown
            dims.append(ir.SymbolicDim(None) if unknown else dim)
        if len(dims) and any(a is not b for a, b in zip(dims, value.shape.dims)):
            value.shape = ir.Shape(dims)
    return changed


def _ir_version_for(model: Any) -> int:
    """The lowest IR version that allows unlisted initializers and carries the model's opsets."""
    import onnx

    opsets = [onnx.helper.make_opsetid(domain, version)
              for domain, version in model.opset_imports.items()
              if domain in ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.training")]
    try:
        needed = onnx.helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    except (ValueError, TypeError):  # an opset newer than this onnx knows: no lifting beyond 4
        needed = IR_WITHOUT_LISTED_INITIALIZERS
    return max(IR_WITHOUT_LISTED_INITIALIZERS, int(needed))
