"""The stand-in ".om" format shared by the stand-in atc and ais_bench: a zip holding the ONNX
graph, the ATC arguments and the stand-in's op list. Real .om files are nothing like this.

The op list imitates what the documented contract lets a comparison tool see of a real build
(the model JSON of `atc --mode=1`, dump file names): every ONNX node becomes one op named after
it (ATC keeps ONNX node names), except that an activation that is the only reader of the output of
a Conv/Gemm/MatMul/Add/BatchNormalization is fused into that node, named by concatenating the
two node names (as in the CANN dump examples, e.g. "conv1conv1_relu") and typed as the
activation. Which ops real ATC fuses is not modelled.

STANDIN_CORRUPT_OP=<ONNX node name> corrupts that node's first output wherever it runs (plain
runs and dumps alike), as a faulty kernel would: output + 0.5 * mean(|output|).
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from pathlib import Path

MARKER = "VLC-STANDIN-OM"
DUMP_MARKER = "VLC-STANDIN-DUMP"
CORRUPT_ENV = "STANDIN_CORRUPT_OP"
FUSED_INTO = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "BatchNormalization"}
ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid"}
C0 = 16  # the channel block of the NC1HWC0 (5HD) layout the stand-in stores Conv outputs in
NZ = 16  # the fractal side of FRACTAL_NZ, the layout it stores MatMul outputs in


def node_name(node, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def plan_ops(model) -> list[dict]:
    """The stand-in ATC's ops, in graph order: name, type, the ONNX nodes each covers, and for
    each output the ONNX node and output index it holds (ATC's _datadump_origin_name/index)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    fused: dict[int, int] = {}  # activation index -> producer index
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    for i, node in enumerate(graph.node):
        if node.op_type not in ACTIVATIONS or not node.input:
            continue
        j = producer.get(node.input[0])
        if j is None or graph.node[j].op_type not in FUSED_INTO or j in fused.values():
            continue
        out = graph.node[j].output[0]
        if len(graph.node[j].output) == 1 and consumers.get(out) == [i] and out not in outputs:
            fused[i] = j
    absorbed = set(fused.values())
    ops = []
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" or i in absorbed:
            continue  # constants are folded; a producer is emitted with its activation
        group = [fused[i], i] if i in fused else [i]
        names = [node_name(graph.node[k], k) for k in group]
        ops.append({"name": "".join(names), "type": node.op_type, "nodes": names,
                    "conv": any(graph.node[k].op_type in ("Conv", "ConvTranspose") for k in group),
                    "matmul": graph.node[group[-1]].op_type == "MatMul",
                    "inputs": [x for x in graph.node[group[0]].input if x],
                    "outputs": [{"tensor": o, "origin": names[-1], "index": k}
                                for k, o in enumerate(node.output) if o]})
    return ops


def write_om(path: Path, onnx_bytes: bytes, args: dict) -> None:
    import onnx

    ops = plan_ops(onnx.load_from_string(onnx_bytes))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MARKER, "stand-in .om written by tests/standins/atc; not an Ascend model\n")
        z.writestr("model.onnx", onnx_bytes)
        z.writestr("atc_args.json", json.dumps(args, indent=2))
        z.writestr("ops.json", json.dumps(ops, indent=2))


def read_om(path: Path) -> tuple[bytes, dict]:
    with zipfile.ZipFile(path) as z:
        if MARKER not in z.namelist():
            raise ValueError(f"{path} is not a stand-in .om")
        return z.read("model.onnx"), json.loads(z.read("atc_args.json"))


def read_ops(path: Path) -> list[dict]:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("ops.json"))


def model_json(path: Path) -> dict:
    """What `atc --mode=1 --om=X --json=Y` writes, in the documented structure (graph -> op ->
    attr _datadump_original_op_names, output_desc attr _datadump_origin_name/_output_index),
    reduced to what a comparison reads."""
    onnx_bytes, args = read_om(path)
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    inits = {i.name for i in model.graph.initializer}
    made_by = {o["tensor"]: (op["name"], k) for op in read_ops(path) for k, o in enumerate(op["outputs"])}
    ops = [{"name": i.name, "type": "Data", "id": n, "attr": [], "output_desc": [{"attr": []}]}
           for n, i in enumerate(x for x in model.graph.input if x.name not in inits)]
    made_by.update({i.name: (i.name, 0) for i in model.graph.input})
    for op in read_ops(path):
        ops.append({
            "name": op["name"], "type": op["type"], "id": len(ops),
            "input": [f"{made_by[x][0]}:{made_by[x][1]}" for x in op["inputs"] if x in made_by],
            "attr": [{"key": "_datadump_original_op_names", "value": {"list": {"s": op["nodes"]}}}],
            "output_desc": [{"attr": [{"key": "_datadump_origin_name", "value": {"s": o["origin"]}},
                                      {"key": "_datadump_origin_output_index", "value": {"i": o["index"]}}]}
                            for o in op["outputs"]]})
    stem = Path(path).stem
    return {"name": stem, "graph": [{"name": stem, "op": ops}],
            "attr": [{"key": "atc_cmdline", "value": {"s": "stand-in atc " + json.dumps(args)}}]}


def corrupt(model, name: str) -> bool:
    """Corrupt node `name`'s first output in place (see the module docstring)."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    for i, node in enumerate(graph.node):
        if node_name(node, i) != name:
            continue
        out = node.output[0]
        raw = f"{out}__standin_raw"
        node.output[0] = raw
        graph.initializer.append(numpy_helper.from_array(np.array(0.5, dtype=np.float32), f"{raw}__half"))
        added = [helper.make_node("Abs", [raw], [f"{raw}__abs"]),
                 helper.make_node("ReduceMean", [f"{raw}__abs"], [f"{raw}__mean"], keepdims=1),
                 helper.make_node("Mul", [f"{raw}__mean", f"{raw}__half"], [f"{raw}__shift"]),
                 helper.make_node("Add", [raw, f"{raw}__shift"], [out])]
        for k, extra in enumerate(added):
            graph.node.insert(i + 1 + k, extra)
        return True
    return False


def sanitized(text: str) -> str:
    """Dump file names replace '.', '/', '\\' and spaces in op types and names with '_'."""
    return re.sub(r"[./\\ ]", "_", text)


def to_5hd(array):
    """NCHW -> NC1HWC0, channels zero-padded to a multiple of C0."""
    import numpy as np

    n, c, h, w = array.shape
    c1 = -(-c // C0)
    padded = np.zeros((n, c1 * C0, h, w), dtype=array.dtype)
    padded[:, :c] = array
    return np.ascontiguousarray(padded.reshape(n, c1, C0, h, w).transpose(0, 1, 3, 4, 2))


def to_nz(array):
    """(..., M, N) -> FRACTAL_NZ (..., N1, M1, M0, N0), both axes zero-padded to multiples of NZ."""
    import numpy as np

    *batch, m, n = array.shape
    m1, n1 = -(-m // NZ), -(-n // NZ)
    padded = np.zeros((*batch, m1 * NZ, n1 * NZ), dtype=array.dtype)
    padded[..., :m, :n] = array
    blocks = padded.reshape(*batch, m1, NZ, n1, NZ)  # (..., M1, M0, N1, N0)
    return np.ascontiguousarray(np.moveaxis(blocks, -2, -4))  # (..., N1, M1, M0, N0)


def device_layout(op: dict, array):
    """Which layout the stand-in dumps a tensor in (which ops real ATC builds hold in which
    layout is not modelled: Conv outputs in 5HD and MatMul outputs in FRACTAL_NZ exercise the
    conversions the documentation names)."""
    if op.get("conv") and array.ndim == 4:
        return "NC1HWC0", to_5hd(array)
    if op.get("matmul") and array.ndim >= 2:
        return "FRACTAL_NZ", to_nz(array)
    return "ND", array


class Model:
    """A stand-in .om opened for inference with ONNX Runtime."""

    def __init__(self, path: Path):
        import onnx
        import onnxruntime as ort

        self.path = Path(path)
        onnx_bytes, self.args = read_om(self.path)
        self.proto = onnx.load_from_string(onnx_bytes)
        target = os.environ.get(CORRUPT_ENV)
        self.corrupted = bool(target) and corrupt(self.proto, target)
        self.session = ort.InferenceSession(self.proto.SerializeToString(), providers=["CPUExecutionProvider"])
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()
        gears = self.args.get("dynamic_batch_size")
        self.gears = [int(g) for g in gears.split(",")] if gears else []
        self.shapes = {}
        for part in self.args["input_shape"].split(";"):
            name, _, dims = part.partition(":")
            self.shapes[name] = [int(d) for d in dims.split(",")] if dims else []
        mode = self.args.get("precision_mode") or self.args.get("precision_mode_v2") or "force_fp16"
        self.fp16_outputs = mode in ("force_fp16", "fp16") and self.args.get("output_type") != "FP32"
        # the stand-in computes in fp32; dumps of fp16 builds hold float16 as a device's would
        self.fp16_dumps = mode in ("force_fp16", "fp16", "allow_mix_precision", "mixed_float16")
        self._dump_session = None
        self.executions = 0

    def input_shape(self, index: int, batch: int | None) -> list[int]:
        dims = list(self.shapes[self.inputs[index].name])
        if dims and dims[0] == -1:
            if batch is None or batch not in self.gears:
                raise ValueError(f"dynamic batch {batch} is not one of the gears {self.gears}")
            dims[0] = batch
        return dims

    def run(self, arrays: list, dump: dict | None = None) -> list:
        """One execution; with `dump` (the dump section of an acl.json), every op's tensors are
        written the way ACL lays out a model dump."""
        import numpy as np

        feeds = {i.name: a for i, a in zip(self.inputs, arrays)}
        outs = self.session.run([o.name for o in self.outputs], feeds)
        if dump is not None:
            self._dump(feeds, dump)
        self.executions += 1
        if self.fp16_outputs:
            outs = [o.astype(np.float16) if o.dtype == np.float32 else o for o in outs]
        return outs

    def _dump(self, feeds: dict, config: dict) -> None:
        """{dump_path}/{YYYYMMDDhhmmss}/{device}/{model_name}/{model_id}/{execution}/
        {op_type}.{op_name}.{task_id}.{stream_id}.{timestamp}, one file per op (the stand-in's
        own zip format; `tests/standins/msaccucmp.py convert` turns them into .npy files)."""
        import io

        import numpy as np
        import onnx
        import onnxruntime as ort

        model_name = self.path.stem
        wanted = [m.get("model_name") for m in config.get("dump_list", [])]
        if wanted and all(w and w != model_name for w in wanted):
            return
        layers = {x for m in config.get("dump_list", []) for x in m.get("layer", [])}
        ops = [op for op in read_ops(self.path)
               if not layers or op["name"] in layers or layers & set(op["nodes"])]
        mode = config.get("dump_mode", "output")
        if self._dump_session is None:
            exposed = onnx.ModelProto()
            exposed.CopyFrom(self.proto)
            known = {o.name for o in exposed.graph.output}
            for op in ops:
                for o in op["outputs"]:
                    if o["tensor"] not in known:
                        exposed.graph.output.append(onnx.ValueInfoProto(name=o["tensor"]))
                        known.add(o["tensor"])
            self._dump_session = ort.InferenceSession(exposed.SerializeToString(),
                                                      providers=["CPUExecutionProvider"])
        names = [o.name for o in self._dump_session.get_outputs()]
        values = dict(zip(names, self._dump_session.run(names, feeds)))
        values.update(feeds)
        inits = {i.name: i for i in self.proto.graph.initializer}
        folder = (Path(config["dump_path"]) / time.strftime("%Y%m%d%H%M%S") / str(config.get("device", 0))
                  / model_name / "1" / str(self.executions))
        folder.mkdir(parents=True, exist_ok=True)
        for task, op in enumerate(ops):
            stamp = int(time.time() * 1e6)
            path = folder / f"{sanitized(op['type'])}.{sanitized(op['name'])}.{task}.0.{stamp:016d}"
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as z:
                z.writestr(DUMP_MARKER, "stand-in dump written by tests/standins/ais_bench; not ACL's format\n")
                formats = []
                if mode in ("output", "all"):
                    for k, o in enumerate(op["outputs"]):
                        array = np.asarray(values[o["tensor"]])
                        if self.fp16_dumps and array.dtype == np.float32:
                            array = array.astype(np.float16)
                        layout, stored = device_layout(op, array)
                        formats.append({"format": layout, "original_shape": list(array.shape)})
                        z.writestr(f"output.{k}.npy", _npy(stored))
                if mode in ("input", "all"):
                    for k, name in enumerate(op["inputs"]):
                        if name in values:
                            z.writestr(f"input.{k}.npy", _npy(np.asarray(values[name])))
                        elif name in inits:
                            z.writestr(f"input.{k}.npy", _npy(onnx.numpy_helper.to_array(inits[name])))
                z.writestr("formats.json", json.dumps(formats))
            path.write_bytes(buffer.getvalue())


def _npy(array) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
