"""The `torch` target: the original PyTorch module, eager or torch.compile'd, on CPU or CUDA."""

from __future__ import annotations

import ast
import importlib.util
from importlib import metadata
from pathlib import Path

from vlc.artifact import Artifact, BuildDir
from vlc.errors import CompileError, InputError, VlcError
from vlc.signature import Signature
from vlc.spec import Precision, TargetSpec
from vlc.target import Availability, Capabilities, CompileSource, OptionInfo, Session, Target, batch_range
from vlc.targets.torch.session import MODES, WEIGHTS, TorchSession, check_device, check_mode, load_module, torch_dtype


def _probe_torch() -> Availability | None:
    """Availability without importing torch when the answer does not need it, else None."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return Availability(False, "PyTorch is not installed; pip install torch")
    version_file = Path(spec.submodule_search_locations[0]) / "version.py"
    if not version_file.is_file() or _built_cuda(version_file) is not None:
        return None  # a CUDA build (or an unknown one): torch itself says whether a GPU works
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:  # a source tree on the path: ask torch
        return None
    return Availability(True, versions={"torch": version}, devices=["cpu"])


def _built_cuda(version_file: Path) -> str | None:
    """The CUDA version torch was built against, read from torch/version.py (written by its build)
    without importing torch; None for a CPU build or an unreadable file."""
    try:
        tree = ast.parse(version_file.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if (isinstance(target, ast.Name) and target.id == "cuda" and isinstance(node, (ast.Assign, ast.AnnAssign))
                and node.value is not None):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return value if isinstance(value, str) else None
    return None


class TorchTarget(Target):
    name = "torch"
    summary = "PyTorch eager (or torch.compile) on CPU or CUDA; the baseline every target is compared to"
    precisions = (Precision.FP32, Precision.TF32, Precision.FP16, Precision.BF16)
    devices = ("cpu", "cuda")
    options = {"mode": OptionInfo("eager (default), compile, reduce-overhead (CUDA graphs; cuda only) or "
                                  "max-autotune: torch.compile's modes, compiled per input shape with "
                                  "static shapes", str, "eager", choices=MODES)}
    capabilities = Capabilities(needs_model=True)  # the state_dict of the module, re-created from its ref

    def available(self) -> Availability:
        # Importing torch takes about a second; a CPU-only build can never offer CUDA, so its
        # version comes from package metadata and torch is imported only for a CUDA build.
        probed = _probe_torch()
        if probed is not None:
            return probed
        try:
            import torch
        except ImportError as exc:
            return Availability(False, f"PyTorch is not installed ({exc}); pip install torch")
        versions = {"torch": torch.__version__}
        devices = ["cpu"]
        if torch.cuda.is_available():
            devices.append("cuda")
            if torch.version.cuda:
                versions["cuda"] = torch.version.cuda
            if torch.backends.cudnn.is_available():
                versions["cudnn"] = str(torch.backends.cudnn.version())
        return Availability(True, versions=versions, devices=devices)

    def validate_spec(self, spec: TargetSpec, signature: Signature) -> TargetSpec:
        spec = super().validate_spec(spec, signature)

        check_mode(spec.options["mode"], spec.device)  # reduce-overhead needs cuda
        if spec.precision == Precision.TF32 and spec.device != "cuda":
            raise InputError("precision tf32 needs --device cuda (TF32 is a GPU tensor-core format)",
                             fix="use --device cuda, or --precision fp32 on the CPU")
        return spec

    def _compile(self, source: CompileSource, spec: TargetSpec, build: BuildDir) -> None:
        import torch

        if source.model is None:
            raise InputError(f"target torch needs a PyTorch model; got an ONNX file ({source.ref})",
                             fix="pass a model ref (example name, file.py:factory, package.module:factory), "
                                 "or use --target onnxruntime for ONNX files")
        check_device(spec.device)
        model = source.model
        dtype = torch_dtype(spec.precision)
        state = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
                 for k, v in model.module.state_dict().items()}
        torch.save(state, build.path / WEIGHTS)
        build.files["main"] = WEIGHTS
        input_names = [s.name for s in model.inputs]
        mode = spec.options["mode"]
        build.extra.update({"model_ref": model.ref, "input_names": input_names,
                            "output_names": list(model.output_names), "mode": mode,
                            "dtype": str(dtype).replace("torch.", "")})
        if spec.device == "cuda":
            build.extra["gpu"] = torch.cuda.get_device_name()
        build.log(f"saved the state_dict of {model.ref} ({len(state)} tensors, {dtype}) as {WEIGHTS}")
        # Re-create the module exactly as `open` will, and run it once: a ref that cannot be
        # loaded again, or a precision the device cannot run, fails here rather than later.
        module = load_module(model.ref, build.path / WEIGHTS, spec.device, spec.precision)
        session = TorchSession(module, input_names, list(model.output_names), spec.device, spec.precision)
        allowed = batch_range(spec, source.signature)
        batch = spec.batch[1] if spec.batch else (allowed[0] if allowed else 1)
        feeds = source.generate_inputs(batch, seed=0)
        try:
            session.run(feeds)
        except VlcError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model's own failure, whatever its type
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise CompileError(f"the model fails at {spec.precision.value} on {spec.device}: "
                               f"{type(exc).__name__}: {first}",
                               fix="try another --precision or --device") from None
        finally:
            session.close()
        build.log(f"checked: re-created from {model.ref} and ran batch {batch} on {spec.device}")

    def _open(self, artifact: Artifact) -> Session:
        spec = artifact.spec
        check_device(spec.device)
        extra = artifact.manifest.extra
        module = load_module(extra["model_ref"], artifact.file("main"), spec.device, spec.precision)
        return TorchSession(module, extra["input_names"], extra["output_names"], spec.device, spec.precision,
                            extra.get("mode", "eager"))
