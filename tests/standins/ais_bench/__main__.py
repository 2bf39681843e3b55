"""STAND-IN for `python3 -m ais_bench` (see tests/standins/README.md): the documented CLI,
byte-size input matching, NPY outputs, the summary JSON and console summary lines. Times are
ONNX Runtime CPU times, not NPU times."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ais_bench.om import Model


def str2bool(v):
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected true, 1, false, 0 with case insensitive.")


def parse(argv):
    p = argparse.ArgumentParser(prog="ais_bench (stand-in)")
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--input", "-i", default=None)
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--output_dirname", default=None)
    p.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    p.add_argument("--loop", "-l", type=int, default=1)
    p.add_argument("--debug", type=str2bool, default=False)
    p.add_argument("--device", "-d", type=int, default=0)
    p.add_argument("--dymBatch", type=int, default=0)
    p.add_argument("--batchsize", type=int, default=None)
    p.add_argument("--display_all_summary", type=str2bool, default=False)
    p.add_argument("--warmup_count", type=int, default=1)
    p.add_argument("--dump", type=str2bool, default=False)
    p.add_argument("--acl_json_path", default=None)
    args = p.parse_args(argv)
    if args.output is None and args.output_dirname is not None:
        p.error("--output_dirname cannot be used without --output")
    if args.dump and args.output is None:
        p.error("when dump or profiler, miss output path, please check them!")
    return args


def dump_config(args):
    """The dump section ACL would run with: --acl_json_path's, else the acl.json that --dump
    writes into --output (dump_path OUTPUT/dump, dump_mode all, dump_list the model's name), as
    ais_bench's get_acl_json_path does."""
    if args.acl_json_path:
        with open(args.acl_json_path) as f:
            section = json.load(f).get("dump")
        return None if section is None else {**section, "device": args.device}
    if not args.dump:
        return None
    section = {"dump_path": os.path.join(args.output, "dump"), "dump_mode": "all",
               "dump_list": [{"model_name": Path(args.model).name.split(".")[0]}]}
    os.makedirs(section["dump_path"], exist_ok=True)
    with open(os.path.join(args.output, "acl.json"), "w") as f:
        json.dump({"dump": section}, f, indent=4, sort_keys=True)
    return {**section, "device": args.device}


def stats(values):
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0}
    return {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()),
            "median": float(np.median(a)), "percentile(99%)": float(np.percentile(a, 99)), "count": int(a.size)}


def line(name, s):
    return (f"[INFO] {name} (ms): min = {s['min']}, max = {s['max']}, mean = {s['mean']}, "
            f"median = {s['median']}, percentile(99%) = {s['percentile(99%)']}")


def main(argv):
    args = parse(argv)
    model = Model(Path(args.model))
    batch = args.dymBatch or None
    if model.gears and batch is None:
        print("[ERROR] a dynamic-batch model needs --dymBatch", file=sys.stderr)
        return 1
    files = args.input.split(",") if args.input else []
    if files and len(files) != len(model.inputs):
        print(f"[ERROR] {len(files)} input files for {len(model.inputs)} model inputs", file=sys.stderr)
        return 1
    arrays = []
    for k, meta in enumerate(model.inputs):
        shape = model.input_shape(k, batch)
        dtype = np.dtype({"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
                          "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(uint8)": "uint8",
                          "tensor(int8)": "int8"}[meta.type])
        want = int(np.prod(shape)) * dtype.itemsize
        if not files:
            arrays.append(np.zeros(shape, dtype=dtype))
            continue
        array = np.load(files[k])
        if array.nbytes != want:
            print(f"[ERROR] input {k} file {files[k]} has {array.nbytes} bytes, the model input needs {want}",
                  file=sys.stderr)
            return 1
        if array.dtype != dtype:  # the real tool only compares sizes; the stand-in is stricter
            print(f"[ERROR] input {k} is {array.dtype}, the model input is {dtype}", file=sys.stderr)
            return 1
        arrays.append(array.reshape(shape))
    dump = dump_config(args)
    for _ in range(args.warmup_count):
        model.run(arrays, dump)
    times, h2d, d2h = [], [], []
    outs = None
    for _ in range(args.loop):
        t0 = time.perf_counter()
        copies = [np.array(a) for a in arrays]
        t1 = time.perf_counter()
        outs = model.run(copies, dump)
        t2 = time.perf_counter()
        outs = [np.array(o) for o in outs]
        t3 = time.perf_counter()
        h2d.append((t1 - t0) * 1000)
        times.append((t2 - t1) * 1000)
        d2h.append((t3 - t2) * 1000)
    prefix = None
    if args.output:
        name = args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S")
        prefix = os.path.join(args.output, name)
        os.makedirs(prefix, exist_ok=True)
        stem = Path(files[0]).stem if files else "pure_infer_data"
        for k, out in enumerate(outs):
            if args.outfmt == "NPY":
                np.save(os.path.join(prefix, f"{stem}_{k}.npy"), out)
            else:
                out.tofile(os.path.join(prefix, f"{stem}_{k}.{args.outfmt.lower()}"))
    compute = stats(times)
    bs = batch or (model.input_shape(0, None)[0] if model.inputs and model.input_shape(0, None) else 1)
    throughput = 1000 * bs / compute["mean"] if compute["mean"] else 0
    info = {"filesinfo": {}, "args": sys.argv, "H2D_latency": stats(h2d), "NPU_compute_time": compute,
            "D2H_latency": stats(d2h), "npu_compute_time_list": times, "throughput": throughput,
            "pid": os.getpid()}
    print("[INFO] -----------------Performance Summary------------------")
    if args.display_all_summary:
        print(line("H2D_latency", info["H2D_latency"]))
    print(line("NPU_compute_time", compute))
    if args.display_all_summary:
        print(line("D2H_latency", info["D2H_latency"]))
    print(f"[INFO] throughput 1000*batchsize.mean({bs})/NPU_compute_time.mean({compute['mean']}): {throughput}")
    print("[INFO] ------------------------------------------------------")
    if prefix is not None:
        with open(prefix + "_summary.json", "w") as f:
            json.dump(info, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
