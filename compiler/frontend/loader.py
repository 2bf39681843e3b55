"""Resolve a model reference: an example name, `file.py:factory`, `package.module:factory`, or .onnx."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vlc import examples
from vlc.errors import InputError
from vlc.model import BATCH, InputSpec, ModelSource, flatten_outputs

TEST_SIZE_SUFFIX = "@"



def module_from_source(path: Path, prefix: str) -> Any:
    """Import the user's Python file `path` as a module named after `prefix` and the file.

    Compiled from the source itself, never from a cached .pyc: a file edited twice within one
    second at the same size would otherwise run the old code under the new hash. What the file
    raises while running reaches the caller unchanged."""
    module_name = f"{prefix}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    return module

def is_onnx_ref(ref: str) -> bool:
    return ref.lower().endswith(".onnx")


def check_onnx_file(path: Path) -> Path:
    """Fail with one clear line for a missing, unreadable or non-ONNX file."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.exists():
        raise InputError(f"model file {path} does not exist", fix="check the path")
    if not path.is_file():
        raise InputError(f"{path} is not a file", fix="pass an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied", fix="check the file's permissions") from None
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"{path} is not a valid ONNX model ({type(exc).__name__})",
                         fix="pass a file written by an ONNX exporter") from None
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{path} holds no ONNX graph", fix="pass a file written by an ONNX exporter")
    _refuse_dangling_inputs(model, path)
    return path


def _refuse_dangling_inputs(model: Any, path: Path) -> None:
    """A node that reads a tensor nothing provides: named in the user's file, before any rewriting.

    Names may come from any graph level (a subgraph reads its outer scopes), so every name
    provided anywhere in the model counts; ordering is not checked (runtimes sort nodes)."""
    graphs, provided = [model.graph], set[str]()
    for graph in graphs:
        provided.update(v.name for v in graph.input)
        provided.update(t.name for t in graph.initializer)
        provided.update(t.values.name for t in graph.sparse_initializer)
        for node in graph.node:
            provided.update(node.output)
            for attribute in node.attribute:
                graphs.extend([attribute.g] if attribute.HasField("g") else attribute.graphs)
    for graph in graphs:
        for index, node in enumerate(graph.node):
            for name in node.input:
                if name and name not in provided:
                    label = f"'{node.name}' " if node.name else ""
                    raise InputError(f"{path}: node {index} {label}({node.op_type}) reads '{name}', which no "
                                     "node, initializer or graph input provides",
                                     where=f"graph '{graph.name}'" if graph.name else None,
                                     fix=f"re-export the model from its source, or add '{name}' as a graph input")


def load_model(ref: str, *, weights: str | Path | None = None) -> ModelSource | Path:
    """A ModelSource for torch models, or the checked path of an ONNX file."""
    if is_onnx_ref(ref):
        return check_onnx_file(Path(ref))
    if ":" in ref:
        return _load_factory(ref)

    name, _, size = ref.partition(TEST_SIZE_SUFFIX)
    if name in examples.names():
        source = examples.load(name, size=size or "full", weights=weights)
        source.ref = ref
        return source
    raise InputError(f"cannot resolve model '{ref}'",
                     fix=f"use an example ({', '.join(examples.names())}), file.py:factory, "
                         "package.module:factory, or an .onnx file")


def _exit_error(action: str, exc: SystemExit, ref: str, fix: str) -> InputError:
    """A model file or factory that calls sys.exit() must not end vlc with its status."""
    return InputError(f"{action} called sys.exit({exc.code!r})", where=ref, fix=fix)


_MAIN_GUARD = "put script code under `if __name__ == '__main__':`"


def _import_factory(ref: str) -> Any:
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise InputError(f"model reference '{ref}' needs a file or module and a factory name",
                         fix="use file.py:factory or package.module:factory")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise InputError(f"model file {path} does not exist", where=ref, fix="check the path")
        try:
            module = module_from_source(path, "vlc_user_model")
        except SystemExit as exc:
            raise _exit_error(f"importing {path}", exc, ref, _MAIN_GUARD) from None
        except Exception as exc:  # noqa: BLE001 - the model file raised while importing, whatever the type
            raise InputError(f"importing {path} failed: {type(exc).__name__}: {exc}", where=ref,
                             fix="fix the model file so it imports") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise InputError(f"cannot import module '{target}': {exc}", where=ref,
                             fix="install the package or check the module path") from None
        except SystemExit as exc:
            raise _exit_error(f"importing module '{target}'", exc, ref, _MAIN_GUARD) from None
        except Exception as exc:  # noqa: BLE001 - the module itself raised while importing
            raise InputError(f"importing module '{target}' failed: {type(exc).__name__}: {exc}", where=ref,
                             fix="fix the module so it imports") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise InputError(f"'{attr}' is not a callable in {target}", where=ref,
                         fix="name a function that returns the model")
    return factory


def _load_factory(ref: str) -> ModelSource:
    import torch

    factory = _import_factory(ref)
    torch.manual_seed(0)  # factories that initialise randomly give the same weights every load
    try:
        made = factory()
    except SystemExit as exc:
        raise _exit_error("the model factory", exc, ref, "return the model instead of exiting") from None
    except Exception as exc:  # noqa: BLE001 - the user's factory may raise any type
        raise InputError(f"model factory failed: {type(exc).__name__}: {exc}", where=ref,
                         fix="fix the factory so it returns a model") from None
    if isinstance(made, ModelSource):
        made.ref = ref
        return made
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        return source_from_examples(ref, made[0], made[1])
    raise InputError(f"factory returned {type(made).__name__}", where=ref,
                     fix="return a vlc.model.ModelSource or a (module, example_inputs) pair")


def source_from_examples(ref: str, module: Any, examples_in: Any) -> ModelSource:
    """Build a ModelSource from example tensors; the first axis of every input is the batch."""
    import torch

    if isinstance(examples_in, torch.Tensor):
        examples_in = (examples_in,)
    if not isinstance(examples_in, (tuple, list, dict)):
        raise _examples_error(type(examples_in).__name__, ref)
    if isinstance(examples_in, dict):
        named = dict(examples_in)
    else:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params] or [f"input_{i}" for i in range(len(examples_in))]
        if len(names) < len(examples_in):
            names += [f"input_{i}" for i in range(len(names), len(examples_in))]
        named = dict(zip(names, examples_in))
    if not named:
        raise _examples_error(f"an empty {type(examples_in).__name__}", ref)
    if odd := [k for k, v in named.items() if not isinstance(v, torch.Tensor)]:
        raise _examples_error(f"{type(named[odd[0]]).__name__} for '{odd[0]}'", ref)
    specs = [_spec_from_tensor(name, t) for name, t in named.items()]
    module.eval()
    try:
        with torch.no_grad():
            out = module(*named.values())
    except Exception as exc:  # noqa: BLE001 - the user's model may raise any type
        raise InputError(f"the model fails on the factory's example inputs: {type(exc).__name__}: {exc}",
                         where=ref, fix="return example inputs the model's forward accepts") from None
    return ModelSource(name=_name_from_ref(ref), ref=ref, module=module, inputs=specs,
                       output_names=output_names_of(out),
                       batch_sizes=tuple(sorted({1, int(next(iter(named.values())).shape[0])})))


def _examples_error(got: str, ref: str) -> InputError:
    return InputError(f"the factory's example inputs must be torch tensors, got {got}", where=ref,
                      fix="return (module, tensor), (module, (tensor, ...)) or (module, {name: tensor}); "
                          "torch.from_numpy converts an array")


def _spec_from_tensor(name: str, tensor: Any) -> InputSpec:
    array = tensor.detach().cpu().numpy()
    shape = (BATCH, *array.shape[1:]) if array.ndim else ()
    if array.dtype == np.bool_:
        return InputSpec(name, shape, "bool", "bool")
    if np.issubdtype(array.dtype, np.integer):
        return InputSpec(name, shape, array.dtype.name, "int", int(array.min()), int(array.max()) + 1)
    return InputSpec(name, shape, array.dtype.name, "normal", 0.0, 1.0)


def output_names_of(out: Any) -> list[str]:
    """Names for the flattened outputs: dict keys when the forward returns a flat dict."""

    values = flatten_outputs(out)
    if isinstance(out, dict) and len(values) == len(out):
        return [str(k) for k in out]
    if len(values) == 1:
        return ["output"]
    return [f"output_{i}" for i in range(len(values))]


def _name_from_ref(ref: str) -> str:
    target, _, attr = ref.rpartition(":")
    return attr if attr else Path(target).stem
