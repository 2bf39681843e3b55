"""Which operators ONNX Runtime's quantizer covers, against CPU latency: does quantizing more than
Conv/MatMul/Gemm (vlc's default) change the int8/fp32 ratio on this CPU?

    vlc compile mobilevit-s --target onnxruntime -o mvit-fp32     # its source.onnx: the normalized graph
    .venv/bin/python benchmarks/precision/int8_op_sets.py mvit-fp32/source.onnx

The graph (one float32 image input) is quantized by onnxruntime.quantization's quantize_static
(QDQ, per-channel int8 weights, MinMax ranges on 4 uniform [0, 1) samples at batch 1) with three
operator sets (Conv/MatMul/Gemm; plus the data-movement ops; every op ONNX Runtime quantizes by
default), each with uint8 activations and 7-bit weights and with symmetric int8 activations. Every
graph is timed in its own ONNX Runtime CPU session in this process (3 warm-up calls, 20 timed,
batch 1, median, inputs in host memory), and its first output is compared with the fp32 graph's
(cosine). ONNX Runtime's kernels only: `-O int8=auto`'s accuracy-driven plan is not applied here.
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np

OP_SETS = {"conv-matmul": ["Conv", "MatMul", "Gemm"],
           "plus-data-movement": ["Conv", "MatMul", "Gemm", "Transpose", "Reshape", "Concat", "Split", "Slice",
                                  "Gather", "Squeeze", "Unsqueeze", "Flatten"],
           "everything": None}


def median_ms(path: str, feeds: dict[str, np.ndarray], runs: int = 20) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)), session.run(None, feeds)[0]


def main(source: str) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    graph = onnx.load(source)
    first = graph.graph.input[0]
    shape = [1] + [d.dim_value for d in first.type.tensor_type.shape.dim[1:]]
    rng = np.random.default_rng(0)
    feeds = [{first.name: rng.random(shape, dtype=np.float32)} for _ in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(feeds)

        def get_next(self):
            return next(self.left, None)

    fp32_ms, reference = median_ms(source, feeds[0])
    print(f"| fp32 | | {fp32_ms:.2f} | 1.00x | 1 |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        inferred = f"{tmp}/inferred.onnx"
        onnx.save(onnx.shape_inference.infer_shapes(graph), inferred)
        for name, ops in OP_SETS.items():
            for activations, reduce_range in (("uint8", True), ("int8", False)):
                out = f"{tmp}/{name}-{activations}.onnx"
                quantize_static(inferred, out, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=ops,
                                per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                                activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                                extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True})
                ms, output = median_ms(out, feeds[0])
                cosine = float((reference * output).sum() / np.linalg.norm(reference) / np.linalg.norm(output))
                print(f"| {name} | {activations} | {ms:.2f} | {fp32_ms / ms:.2f}x | {cosine:.4f} |", flush=True)


if __name__ == "__main__":
    print("| operators quantized | activations | median ms | fp32/int8 | cosine vs fp32 |")
    print("|---|---|---|---|---|")
    main(sys.argv[1])
