"""Graph fixes and model-source patches that make exports acceptable to Ascend's ATC.

Every graph fix is a named :class:`Patch` over an ``onnx.ModelProto`` that keeps numerics
(each is tested against ONNX Runtime); :mod:`vlc.ascend_patches.plugin` registers them as
``vlc.frontend.passes.GraphPass`` objects so ``vlc export --passes`` can run them too.
Patches that change the PyTorch model before export live in
:mod:`vlc.ascend_patches.torch_patches`.
"""

from vlc.ascend_patches.core import PATCHES, Patch, PatchContext, apply_patches, get_patch

__all__ = ["PATCHES", "Patch", "PatchContext", "apply_patches", "get_patch"]
