"""Graph fixes and model-source patches that make exports acceptable to Ascend's ATC.

Every graph fix is a named patch over an ``onnx.ModelProto`` that keeps numerics (each is
tested against ONNX Runtime). Patches are :class:`vlc.frontend.passes.GraphPass` objects, so
``vlc export --passes`` can run them too; the Ascend targets run them in their pass set's
order (:mod:`vlc.targets.ascend.patch_set`). Patches that change the PyTorch model before
export live in :mod:`vlc.ascend_patches.torch_patches`.
"""

from vlc.ascend_patches.core import PATCHES, AscendPatch, Patch, PatchContext, apply_patches, get_patch

__all__ = ["PATCHES", "AscendPatch", "Patch", "PatchContext", "apply_patches", "get_patch"]
