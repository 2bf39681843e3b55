"""The stand-in ".om" format shared by the stand-in atc and ais_bench: a zip holding the ONNX
graph and the ATC arguments. Real .om files are nothing like this."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

MARKER = "VLC-STANDIN-OM"


def write_om(path: Path, onnx_bytes: bytes, args: dict) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MARKER, "stand-in .om written by tests/standins/atc; not an Ascend model\n")
        z.writestr("model.onnx", onnx_bytes)
        z.writestr("atc_args.json", json.dumps(args, indent=2))


def read_om(path: Path) -> tuple[bytes, dict]:
    with zipfile.ZipFile(path) as z:
        if MARKER not in z.namelist():
            raise ValueError(f"{path} is not a stand-in .om")
        return z.read("model.onnx"), json.loads(z.read("atc_args.json"))


class Model:
    """A stand-in .om opened for inference with ONNX Runtime."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        onnx_bytes, self.args = read_om(Path(path))
        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
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

    def input_shape(self, index: int, batch: int | None) -> list[int]:
        dims = list(self.shapes[self.inputs[index].name])
        if dims and dims[0] == -1:
            if batch is None or batch not in self.gears:
                raise ValueError(f"dynamic batch {batch} is not one of the gears {self.gears}")
            dims[0] = batch
        return dims

    def run(self, arrays: list) -> list:
        import numpy as np

        feeds = {i.name: a for i, a in zip(self.inputs, arrays)}
        outs = self.session.run([o.name for o in self.outputs], feeds)
        if self.fp16_outputs:
            outs = [o.astype(np.float16) if o.dtype == np.float32 else o for o in outs]
        return outs
