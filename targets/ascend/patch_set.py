"""The Ascend targets' pass set: which graph patches an ATC build may run, and in what order.

`vlc check` decides which of them a build needs (preflight.auto_patches) and -O patches
changes the choice; whichever subset runs, it runs in this order. The order is the same for
every CANN version and precision: the patches read both from their PatchContext (opset range,
LayerNorm form: vlc/ascend_patches/cann.toml) rather than being different passes.
"""

from __future__ import annotations

from collections.abc import Iterable

from vlc.ascend_patches.core import get_patch
from vlc.frontend.passes import PassSet

# Shapes first (later patches need static shapes and folded constants), opset last but one
# (earlier patches may emit nodes of any opset, the converter then settles them), then int32
# and the fp16 clamp over what the rewrites left.
ATC_PATCHES = PassSet(
    "ascend-atc", "ascend", "graph patches before ATC (the subset vlc check picks, -O patches)",
    ("ascend-freeze-shapes", "ascend-trilu-mask", "ascend-gather-neg-index", "ascend-einsum",
     "ascend-attention", "ascend-layernorm", "ascend-opset", "ascend-int64-to-int32",
     "ascend-fp16-clamp"))


def ordered(names: Iterable[str]) -> list[str]:
    """`names` in the set's order; an unknown name is refused in one line."""
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        get_patch(name)  # "unknown Ascend patch" with the known names
    return list(ATC_PATCHES.select(wanted))
