"""Calibration data for int8: representative feeds from files, a dataset script or the model's
input generator, and the per-tensor ranges (the calibration table) vlc derives from them.

Constant data is refused: all-ones tensors (what one of the reference write-ups used) give
scales that say nothing about real activations, and the int8 engine then fails accuracy.

Ranges (`calibrate_ranges`): every tensor to quantize is observed on every feed (its min/max,
then a histogram over that span), and its range is chosen by `method`: "minmax" (the observed
span), "percentile" (the span between two percentiles) or "mse" (the span whose uniform
quantization to the given number of levels has the least expected squared error: rounding
inside the span, clipping outside it). Heavy-tailed activations (SiLU outputs, attention
projections) lose most to minmax scales, which spend the levels on a few outliers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlc.errors import InputError
from vlc.frontend.loader import module_from_source
from vlc.measure import cpu_session
from vlc.model import InputSpec, ModelSource, generate_from_specs
from vlc.signature import Signature

DEFAULT_BATCHES = 8
SCRIPT_FUNCTION = "load_data"  # Polygraphy's data-loader-script convention
MAX_SCRIPT_FEEDS = 512  # a script may yield forever; calibration takes this many at most
RANGE_METHODS = ("minmax", "percentile", "mse")
HISTOGRAM_BINS = 4096


@dataclass
class CalibrationData:
    """A list of feeds (input name -> array), each one calibration batch."""

    feeds: list[dict[str, np.ndarray]]
    source: str  # where it came from, for the report
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.feeds)

    @property
    def samples(self) -> int:
        return sum(int(next(iter(f.values())).shape[0]) if f and next(iter(f.values())).ndim else 1
                   for f in self.feeds)

    @classmethod
    def from_dir(cls, path: str | Path) -> CalibrationData:
        """Read a directory of .npz files (one feed each, arrays keyed by input name) or, for
        single-input models, .npy files (one batch each). Files are read in name order."""
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"calibration directory {path} does not exist",
                             fix="pass a directory of .npz files (one feed each, keyed by input name)")
        npz = sorted(path.glob("*.npz"))
        npy = sorted(path.glob("*.npy"))
        if npz and npy:
            raise InputError(f"calibration directory {path} mixes .npz and .npy files",
                             fix="use .npz files keyed by input name, or .npy files for a single-input model")
        if not npz and not npy:
            raise InputError(f"calibration directory {path} has no .npz or .npy files",
                             fix="save feeds with numpy.savez(file, **{input_name: array})")
        feeds: list[dict[str, np.ndarray]] = []
        for file in npz:
            with np.load(file, allow_pickle=False) as data:
                feeds.append({k: np.asarray(data[k]) for k in data.files})
        for file in npy:
            feeds.append({"": np.load(file, allow_pickle=False)})  # name filled in by bind()
        return cls(feeds, f"directory {path} ({len(feeds)} files)", {"dir": str(path)})

    @classmethod
    def from_script(cls, ref: str | Path) -> CalibrationData:
        """Feeds from a dataset script: `loader.py` (its `load_data` function, Polygraphy's
        data-loader convention) or `loader.py:function`. The function takes no arguments and
        returns or yields feeds, each a dict of input name -> array (at most MAX_SCRIPT_FEEDS
        are taken)."""
        text = str(ref)
        path_text, _, function = text.rpartition(":") if ".py:" in text else (text, "", SCRIPT_FUNCTION)
        path = Path(path_text)
        function = function or SCRIPT_FUNCTION
        if path.suffix != ".py" or not path.is_file():
            raise InputError(f"calibration script {path} does not exist",
                             fix="pass a directory of .npz feeds, or a Python file whose load_data() "
                                 "yields feeds (loader.py or loader.py:function)")
        try:
            module = module_from_source(path, "vlc_calibration")
            loader = getattr(module, function, None)
            if not callable(loader):
                raise InputError(f"calibration script {path} has no function {function}()",
                                 fix=f"define {function}() returning or yielding feeds, or name "
                                     f"another one as {path}:function")
            feeds = []
            for feed in loader():
                if not isinstance(feed, Mapping):
                    raise InputError(f"calibration script {path}:{function} gave a "
                                     f"{type(feed).__name__}, not a feed",
                                     fix="yield dicts of input name -> numpy array")
                feeds.append({str(k): np.asarray(v) for k, v in feed.items()})
                if len(feeds) >= MAX_SCRIPT_FEEDS:
                    break
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the user's script raised
            raise InputError(f"calibration script {path}:{function} failed: {type(exc).__name__}: {exc}",
                             fix="fix the script so that it yields feeds") from None
        if not feeds:
            raise InputError(f"calibration script {path}:{function} gave no feeds",
                             fix="yield at least one dict of input name -> numpy array")
        return cls(feeds, f"script {path}:{function} ({len(feeds)} feeds)",
                   {"script": str(path), "function": function})

    @classmethod
    def from_option(cls, value: str | Path) -> CalibrationData:
        """`-O calibration=...`: a directory of .npz/.npy feeds, or a dataset script (.py)."""
        text = str(value)
        if text.endswith(".py") or ".py:" in text:
            return cls.from_script(text)
        return cls.from_dir(text)

    @classmethod
    def generate(cls, inputs: ModelSource | list[InputSpec], *, batches: int = DEFAULT_BATCHES,
                 batch: int = 1, seed: int = 1000) -> CalibrationData:
        """Feeds from the model's input generator (a ModelSource) or per-input specs; each batch
        uses its own seed, so the set is non-constant and differs from the check's inputs."""
        if batches < 1:
            raise InputError(f"calibration needs at least one batch, got {batches}",
                             fix="use calibration_batches >= 1")
        if isinstance(inputs, ModelSource):
            feeds = [inputs.generate_inputs(batch, seed + i) for i in range(batches)]
            what = f"generated by {inputs.name}'s input generator"
        else:
            feeds = [generate_from_specs(list(inputs), batch, seed + i) for i in range(batches)]
            what = "generated from input specs"
        return cls(feeds, f"{what} ({batches} batches of {batch}, seeds {seed}..{seed + batches - 1})",
                   {"batches": batches, "batch": batch, "seed": seed})

    def bind(self, signature: Signature) -> CalibrationData:
        """Check names, dtypes and ranks against the graph, and that the data has spread."""
        names = signature.input_names
        feeds = []
        for i, feed in enumerate(self.feeds):
            if set(feed) == {""}:
                if len(names) != 1:
                    raise InputError(f"calibration .npy files fit single-input models; this one takes "
                                     f"{', '.join(names)}",
                                     fix="save each feed as .npz with one array per input name")
                feed = {names[0]: feed[""]}
            feed = dict(feed)
            for sig in signature.inputs:
                if sig.name not in feed:
                    raise InputError(f"calibration feed {i} has no input '{sig.name}'", where=self.source,
                                     fix=f"give every feed the model's inputs: {', '.join(names)}")
                if feed[sig.name].dtype != np.dtype(sig.dtype):
                    feed[sig.name] = feed[sig.name].astype(sig.dtype)
            if extra := sorted(set(feed) - set(names)):
                raise InputError(f"calibration feed {i} has unknown input(s) {', '.join(extra)}",
                                 where=self.source, fix=f"the model takes: {', '.join(names)}")
            signature.validate_inputs(feed, where=f"calibration feed {i} ({self.source})")
            feeds.append(feed)
        if not feeds:
            raise InputError("calibration data is empty", where=self.source,
                             fix="give at least one feed")
        refuse_constant(feeds, self.source)
        return CalibrationData(feeds, self.source, dict(self.meta))


def refuse_constant(feeds: Iterable[Mapping[str, np.ndarray]], source: str) -> None:
    """Raise when floating-point calibration data is constant.

    A float input with one value everywhere (across all feeds) is refused, except a 0/1 mask
    beside other float inputs that do vary (an all-ones attention or box mask is legitimate).
    """
    feeds = list(feeds)
    constant: dict[str, float] = {}
    varying = False
    for name in feeds[0]:
        arrays = [np.asarray(f[name]) for f in feeds]
        if not np.issubdtype(arrays[0].dtype, np.floating):
            continue  # token ids, int or bool masks may legitimately be constant
        if not all(np.isfinite(a).all() for a in arrays):
            raise InputError(f"calibration input '{name}' contains NaN or Inf", where=source,
                             fix="give finite, representative data")
        lo = min(float(a.min()) for a in arrays if a.size)
        hi = max(float(a.max()) for a in arrays if a.size)
        if hi > lo:
            varying = True
        else:
            constant[name] = lo
    for name, value in constant.items():
        if varying and value in (0.0, 1.0):
            continue
        raise InputError(f"calibration input '{name}' is constant (every value is {value:g}); int8 "
                         "scales from it would not fit real data", where=source,
                         fix="calibrate with representative inputs (real samples, or the model's "
                             "input generator)")


# ---- the calibration table ----------------------------------------------------------------------

@dataclass
class TensorRange:
    """One tensor's calibration: what the data showed and the range chosen for its int8 scale."""

    observed: tuple[float, float]  # min, max over every calibration feed
    chosen: tuple[float, float]  # the range quantized (includes 0, so zero is exact)

    def to_json(self) -> dict[str, Any]:
        return {"observed": [float(v) for v in self.observed], "chosen": [float(v) for v in self.chosen]}


@dataclass
class RangeTable:
    """Per-tensor ranges from `calibrate_ranges`, by tensor name."""

    method: str
    levels: int  # quantization steps the ranges were chosen for (255 asymmetric, 254 symmetric)
    symmetric: bool
    ranges: dict[str, TensorRange]
    percentile: float | None = None

    def ort_overrides(self) -> dict[str, list[dict[str, Any]]]:
        """ONNX Runtime's TensorQuantOverrides: the chosen range of each tensor."""
        return {name: [{"rmin": np.float32(r.chosen[0]), "rmax": np.float32(r.chosen[1])}]
                for name, r in self.ranges.items()}


def calibrate_ranges(model: Any, tensors: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]], *,
                     method: str = "mse", symmetric: bool = False, percentile: float = 99.999,
                     bins: int = HISTOGRAM_BINS) -> RangeTable:
    """The calibration table of `tensors` of `model` (an fp32 ModelProto) over `feeds`.

    The graph runs in ONNX Runtime on the CPU with the tensors exposed as outputs, once per feed
    for min/max and (percentile, mse) once more for a histogram over that span."""
    if method not in RANGE_METHODS:
        raise InputError(f"unknown range method '{method}'", fix=f"use one of: {', '.join(RANGE_METHODS)}")
    session, names = _exposing_session(model, tensors)
    lows = {t: np.inf for t in names}
    highs = {t: -np.inf for t in names}
    for feed in feeds:
        for t, value in zip(names, session.run(names, _graph_feed(session, feed))):
            if value.size:
                lows[t] = min(lows[t], float(np.min(value)))
                highs[t] = max(highs[t], float(np.max(value)))
    levels = 254 if symmetric else 255
    hists: dict[str, np.ndarray] = {}
    if method != "minmax":
        hists = {t: np.zeros(bins, np.float64) for t in names}
        for feed in feeds:
            for t, value in zip(names, session.run(names, _graph_feed(session, feed))):
                if highs[t] > lows[t]:
                    hists[t] += np.histogram(value, bins=bins, range=(lows[t], highs[t]))[0]
    ranges = {}
    for t in names:
        lo, hi = (lows[t], highs[t]) if np.isfinite(lows[t]) else (0.0, 0.0)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if method == "minmax" or t not in hists or hists[t].sum() == 0:
            chosen = (lo, hi)
        elif method == "percentile":
            chosen = _percentile_range(lows[t], highs[t], hists[t], percentile, symmetric)
        else:
            chosen = mse_range(lows[t], highs[t], hists[t], levels, symmetric)
        if symmetric:
            m = max(-chosen[0], chosen[1])
            chosen = (-m, m)
        ranges[t] = TensorRange((lows[t], highs[t]), (float(chosen[0]), float(chosen[1])))
    return RangeTable(method, levels, symmetric, ranges, percentile if method == "percentile" else None)


def _exposing_session(model: Any, tensors: Sequence[str]) -> tuple[Any, list[str]]:
    import onnx
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    known = {o.name for o in copy.graph.output}
    produced = {o for n in copy.graph.node for o in n.output} | {i.name for i in copy.graph.input}
    names = [t for t in dict.fromkeys(tensors) if t in produced]
    for t in names:
        if t not in known:
            copy.graph.output.append(onnx.ValueInfoProto(name=t))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # no fusions: an exposed tensor must be the graph's own, not a fused kernel's neighbour
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    data = copy.SerializeToString() if copy.ByteSize() < 1_800_000_000 else None
    if data is None:
        raise InputError("the graph is too large for vlc's range calibration in memory",
                         fix="use -O calibration_method=minmax (ONNX Runtime's calibrator)")

    return cpu_session(data, options), names


def _graph_feed(session: Any, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i.name: feed[i.name] for i in session.get_inputs()}


def _centers(lo: float, hi: float, bins: int) -> np.ndarray:
    edges = np.linspace(lo, hi, bins + 1)
    return (edges[:-1] + edges[1:]) / 2


def _percentile_range(lo: float, hi: float, hist: np.ndarray, percentile: float,
                      symmetric: bool) -> tuple[float, float]:
    centers = _centers(lo, hi, len(hist))
    if symmetric:
        order = np.argsort(np.abs(centers))
        cumulative = np.cumsum(hist[order]) / hist.sum()
        top = float(np.abs(centers[order][min(int(np.searchsorted(cumulative, percentile / 100)), len(order) - 1)]))
        return -top, top
    cumulative = np.cumsum(hist) / hist.sum()
    low = float(centers[min(int(np.searchsorted(cumulative, 1 - percentile / 100)), len(hist) - 1)])
    high = float(centers[min(int(np.searchsorted(cumulative, percentile / 100)), len(hist) - 1)])
    return min(low, 0.0), max(high, 0.0)


FRACTIONS = np.geomspace(0.004, 1.0, 160)  # candidate clip points, as shares of the observed span


def mse_range(lo: float, hi: float, hist: np.ndarray, levels: int, symmetric: bool) -> tuple[float, float]:
    """The range [a, b] (a <= 0 <= b) whose `levels`-step uniform quantization of the histogram
    (`hist` over [lo, hi]) has the least expected squared error: a step s costs s*s/12 per value
    inside the range, a value outside it its distance to the nearer end squared. Symmetric:
    a = -b. Asymmetric: each end is searched in turn with the other fixed (three rounds)."""
    centers = _centers(lo, hi, len(hist))
    weights = hist.astype(np.float64)

    def cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # candidates along the first axis
        a, b = a[:, None], b[:, None]
        step = (b - a) / levels
        outside = np.where(centers > b, (centers - b) ** 2, 0.0) + np.where(centers < a, (a - centers) ** 2, 0.0)
        inside = (centers >= a) & (centers <= b)
        return (weights * outside).sum(1) + (weights * inside).sum(1) * (step[:, 0] ** 2) / 12

    low, high = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        top = max(-low, high)
        candidates = top * FRACTIONS
        best = float(candidates[int(np.argmin(cost(-candidates, candidates)))])
        return -best, best
    a, b = low, high
    for _ in range(3):
        if high > 0:
            options = high * FRACTIONS
            b = float(options[int(np.argmin(cost(np.full_like(options, a), options)))])
        if low < 0:
            options = low * FRACTIONS
            a = float(options[int(np.argmin(cost(options, np.full_like(options, b))))])
    return a, b
