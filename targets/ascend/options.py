"""The `-O` options of the Ascend targets, parsed and checked into one AscendOptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlc.errors import InputError
from vlc.options import OptionInfo, cosine, lower_text, parse_target_options, positive_ints, words
from vlc.signature import Signature
from vlc.spec import Precision, TargetSpec
from vlc.targets.ascend.cann import DEFAULT_CANN, gear_limits, parse_cann, soc_presets, soc_table

PRECISION_MODES = ("force_fp16", "allow_fp32_to_fp16", "must_keep_origin_dtype",
                   "allow_mix_precision", "force_fp32", "cube_fp16in_fp32out",
                   "allow_mix_precision_fp16")
PRECISION_MODES_V2 = ("fp16", "origin", "mixed_float16", "cube_fp16in_fp32out")
INPUT_FORMATS = ("NCHW", "NCDHW", "ND")
LOG_LEVELS = ("error", "warning", "info", "debug", "null")
IMPLMODES = ("high_performance", "high_precision", "high_performance_for_all",
             "high_precision_for_all")

ISLAND_MODES = ("static", "auto")


def parse_patches(value: Any) -> str | list[str]:
    """-O patches: auto, none, '+a,+b' / '-a' (changes to auto) as text, else a list of patch names."""
    if isinstance(value, (list, tuple)):
        return words(value)
    text = str(value).strip()
    if text in ("auto", "none") or text.startswith(("+", "-")):
        return text
    return words(text)


OPTIONS: dict[str, OptionInfo] = {
    "soc_version": OptionInfo("ATC --soc_version, overriding the preset (e.g. Ascend310P3)"),
    "cann": OptionInfo(f"CANN major version the toolkit has: 6, 7 or 8 (default {DEFAULT_CANN}); "
                       "decides opset range, LayerNorm form and precision flags", int, DEFAULT_CANN,
                       parse=parse_cann),
    "input_format": OptionInfo("ATC --input_format: NCHW, NCDHW or ND (default: NCHW when every "
                               "input is a 4-D float tensor, else ND)", choices=INPUT_FORMATS),
    "precision_mode": OptionInfo("ATC precision mode, overriding the one vlc maps from --precision "
                                 "(v2 names fp16/origin/mixed_float16 with cann=8)",
                                 choices=PRECISION_MODES + tuple(m for m in PRECISION_MODES_V2
                                                                 if m not in PRECISION_MODES)),
    "keep_dtype": OptionInfo("node names or OpType::X entries kept in their original dtype "
                             "(ATC --keep_dtype file)", list),
    "fp32_ops": OptionInfo("op types kept in fp32 under mixed precision (ATC --modify_mixlist "
                           "black-list); implies allow_mix_precision for fp16 builds", list),
    "islands": OptionInfo("fp16: static (ATC's precision mode decides) or auto (vlc measures in ONNX "
                          "Runtime which of its fp32 islands the patched graph needs to meet -O accuracy "
                          "and lists those nodes in the --keep_dtype file)", str, "static",
                          choices=ISLAND_MODES, parse=lower_text),
    "accuracy": OptionInfo("islands=auto's goal: the worst output cosine against fp32 (default: fp16's "
                           "tolerance)", float, None, parse=cosine),
    "implmode": OptionInfo("ATC --op_select_implmode: high_performance or high_precision", choices=IMPLMODES),
    "implmode_ops": OptionInfo("ATC --optypelist_for_implmode op types, e.g. [\"Gelu\"]", list),
    "log": OptionInfo("ATC --log level: error, warning, info, debug, null", str, "error", choices=LOG_LEVELS),
    "gears": OptionInfo("dynamic-batch gears, e.g. [1,4,8] (one .om with --dynamic_batch_size)", list,
                        parse=positive_ints),
    "batches": OptionInfo("static batch sizes, one .om each (default: the --batch min/opt/max)", list,
                          parse=positive_ints),
    "patches": OptionInfo("graph patches: auto (what vlc check finds), none, a list of names, or "
                          "'+a,+b' to add to auto / '-a' to drop from it", str, "auto", parse=parse_patches),
    "timeout": OptionInfo("seconds one atc run may take", int, 3600),
    "device_id": OptionInfo("NPU device id for ais_bench", int, 0),
}


@dataclass(frozen=True)
class AscendOptions:
    target: str
    soc_version: str
    cann: int
    precision: Precision
    precision_flag: tuple[str, str]  # ("--precision_mode" or "--precision_mode_v2", value)
    input_format: str
    keep_dtype: tuple[str, ...]
    fp32_ops: tuple[str, ...]
    implmode: str | None
    implmode_ops: tuple[str, ...]
    log: str
    gears: tuple[int, ...]  # empty: static builds
    batches: tuple[int, ...]  # static builds, one .om each (empty with gears)
    patches: str | tuple[str, ...]
    timeout: int
    device_id: int
    notes: tuple[str, ...] = field(default=())
    islands: str = "static"  # auto: the fp32 nodes vlc's search finds go into the keep_dtype file
    accuracy: float | None = None  # islands=auto's cosine goal (None: fp16's tolerance)

    @property
    def builds(self) -> list[tuple[str, int | None]]:
        """(build name, batch) per .om: one per static batch, or one gear build (batch None)."""
        if self.gears:
            return [("gears", None)]
        return [(f"bs{b}", b) for b in self.batches]


def default_input_format(signature: Signature) -> str:
    if signature.inputs and all(len(t.shape) == 4 and t.dtype in ("float32", "float16")
                                for t in signature.inputs):
        return "NCHW"
    return "ND"


def precision_flag(precision: Precision, cann: int, preset_fp32: str, options: dict[str, Any],
                   mixed: bool) -> tuple[str, str]:
    """vlc precision -> ATC's precision flag, unless -O precision_mode overrides it."""
    if options.get("precision_mode") is not None:
        value = str(options["precision_mode"])
        if value in PRECISION_MODES_V2 and value not in PRECISION_MODES:
            if cann < 8:
                raise InputError(f"precision_mode={value} is a --precision_mode_v2 value, which needs "
                                 "CANN 8", fix="use -O cann=8 or a --precision_mode value: "
                                               + ", ".join(PRECISION_MODES))
            return ("--precision_mode_v2", value)
        return ("--precision_mode", value)
    if precision == Precision.FP16:
        return ("--precision_mode", "allow_mix_precision" if mixed else "force_fp16")
    return ("--precision_mode", preset_fp32)


def parse_options(target: str, spec: TargetSpec, signature: Signature) -> AscendOptions:
    """The build settings of a spec: its options typed by the schema (values already typed parse
    again unchanged), then checked against each other, the preset and the batch range."""
    options = parse_target_options(target, OPTIONS, spec.options)
    presets = soc_presets(target)
    preset = presets[spec.preset or soc_table(target)["default"]]
    soc = options["soc_version"] or preset.soc_version
    if not soc.startswith("Ascend"):
        raise InputError(f"soc_version '{soc}' does not name an Ascend SoC",
                         fix="use the chip name `npu-smi info` shows, prefixed: e.g. Ascend310P3")
    ok = soc.startswith("Ascend310P") if target == "ascend310p" else soc == "Ascend310"
    if not ok:
        raise InputError(f"soc_version {soc} is not a chip of target {target}",
                         fix=f"use one of {', '.join(p.soc_version for p in presets.values())} "
                             "(other suffixes with ascend310p), or the --target of that chip")
    cann = options["cann"]
    fp32_ops = tuple(options["fp32_ops"] or ())
    keep_dtype = tuple(options["keep_dtype"] or ())
    mixed = bool(fp32_ops)
    flag = precision_flag(spec.precision, cann, preset.fp32_precision_mode, options, mixed)
    notes = []
    if keep_dtype and flag[1] in ("must_keep_origin_dtype", "origin"):
        notes.append("keep_dtype has no effect with must_keep_origin_dtype")
    if fp32_ops and flag[1] not in ("allow_mix_precision", "allow_mix_precision_fp16", "mixed_float16"):
        raise InputError(f"fp32_ops needs mixed precision, but the precision mode is {flag[1]}",
                         fix="drop -O precision_mode or use allow_mix_precision")
    from vlc.frontend.precision.islands import parse_goal  # local: loads onnx

    islands, goal = parse_goal(options["islands"], options["accuracy"], spec.precision.value)
    if islands == "auto" and spec.precision != Precision.FP16:
        raise InputError(f"islands=auto chooses fp32 nodes of an fp16 build; this build is "
                         f"{spec.precision.value}", fix="use -p fp16, or drop -O islands")
    if islands == "auto" and flag[1] in ("must_keep_origin_dtype", "origin"):
        raise InputError(f"islands=auto lists nodes in ATC's --keep_dtype file, which {flag[1]} ignores",
                         fix="drop -O precision_mode or use force_fp16 / allow_mix_precision")
    implmode = options["implmode"]
    implmode_ops = tuple(options["implmode_ops"] or ())
    if implmode_ops and implmode is None:
        raise InputError("implmode_ops needs implmode", fix="add -O implmode=high_performance")
    log = options["log"]
    input_format = options["input_format"] or default_input_format(signature)
    gears = tuple(options["gears"] or ())
    batches = tuple(options["batches"] or ())
    if gears and batches:
        raise InputError("options gears and batches exclude each other",
                         fix="use gears for one dynamic-batch .om, batches for one .om per batch")
    if gears:
        lo, hi = gear_limits()
        if not lo <= len(gears) <= hi:
            raise InputError(f"{len(gears)} dynamic-batch gears; ATC takes {lo} to {hi} (E10035/E10036)",
                             fix="give between 2 and 100 batch sizes, or one static batch with --batch N")
    if not gears and not batches:
        batches = tuple(sorted(set(spec.batch))) if spec.batch else (1,)
    if spec.batch:
        lo, _, hi = spec.batch
        outside = [b for b in gears + batches if not lo <= b <= hi]
        if outside:
            raise InputError(f"batch sizes {outside} lie outside --batch {lo}..{hi}",
                             fix="widen --batch or change -O gears/batches")
    patches = options["patches"]
    if isinstance(patches, list):
        patches = tuple(patches)
    return AscendOptions(target, soc, cann, spec.precision, flag, input_format, keep_dtype,
                         fp32_ops, implmode, implmode_ops, log, gears, batches, patches, options["timeout"],
                         options["device_id"], tuple(notes), islands,
                         goal.min_cosine if goal is not None else None)
