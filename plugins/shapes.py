"""The activation shapes the plugins meet in the example models, found by running them.

A TorchFunctionMode records every call of F.silu, F.gelu and F.layer_norm (nn.SiLU/GELU/LayerNorm
call these too) during one forward pass at full size and batch 1; the kernel benchmark scales the
batch axis. `python -m vlc.plugins.shapes` rewrites plugins/kernel_shapes.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from vlc import examples

SHAPES_FILE = "kernel_shapes.json"
EXAMPLES = ("vilbert-vqa", "clip-vit-b32-image", "clip-vit-b32-text", "mobilevit-s")


def trace(module: Any, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    """[{kernel, shape, approximate?}] for every SiLU/GELU/LayerNorm call in one forward pass."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    calls: list[dict[str, Any]] = []

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.silu:
                calls.append({"kernel": "silu", "shape": list(args[0].shape)})
            elif func is F.gelu:
                approx = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
                calls.append({"kernel": "gelu", "approximate": approx, "shape": list(args[0].shape)})
            elif func is F.layer_norm:
                normalized = list(args[1])
                eps = kwargs.get("eps", args[4] if len(args) > 4 else 1e-5)
                if len(normalized) == 1:
                    calls.append({"kernel": "layernorm", "eps": float(eps), "shape": list(args[0].shape)})
            return func(*args, **kwargs)

    with torch.no_grad(), Recorder():
        module(*args)
    return calls


def unique(calls: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for call in calls:
        key = json.dumps({k: v for k, v in call.items() if k != "count"}, sort_keys=True)
        entry = seen.setdefault(key, {**call, "count": 0})
        entry["count"] += 1
    return list(seen.values())


def example_shapes(name: str, size: str = "full") -> list[dict[str, Any]]:
    """Trace one example (vlc.examples.load) at batch 1."""
    import torch

    source = examples.load(name, size=size)
    feeds = source.generate_inputs(1, seed=0)
    args = tuple(torch.from_numpy(feeds[spec.name]) for spec in source.inputs)
    module = source.module.eval()
    return [{**c, "example": name} for c in unique(trace(module, args))]


def collect(names: Iterable[str] = EXAMPLES, size: str = "full") -> dict[str, Any]:
    shapes, errors = [], {}
    for name in names:
        try:
            shapes += example_shapes(name, size)
        except Exception as exc:  # noqa: BLE001 - report and carry on with the others
            errors[name] = f"{type(exc).__name__}: {exc}"
    return {"schema": 1, "size": size, "batch": 1, "source": "python -m vlc.plugins.shapes",
            "shapes": shapes, "errors": errors}


def load_shapes() -> dict[str, Any]:
    return json.loads(resources.files("vlc.plugins").joinpath(SHAPES_FILE).read_text())


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="full")
    parser.add_argument("--out", default=str(Path(__file__).with_name(SHAPES_FILE)))
    args = parser.parse_args(argv)
    data = collect(size=args.size)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(data['shapes'])} shapes -> {args.out}; errors: {data['errors'] or 'none'}")
    return 0 if data["shapes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
