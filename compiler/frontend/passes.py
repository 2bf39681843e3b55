"""One graph-pass abstraction for every rewrite vlc runs, in the manner of onnx_ir's passes.

A :class:`GraphPass` has a name, a summary, says whether it keeps numerics and which form of
the model it rewrites (an ``onnx_ir.Model``, or an ``onnx.ModelProto`` for rewrites written
against the protobuf, such as the Ascend patches). :meth:`GraphPass.run` returns a
:class:`PassResult` like ``onnx_ir.passes.PassResult`` (the model and whether it was modified)
plus a :class:`PassRecord`: what changed, notes, nodes before and after, seconds.

A :class:`PassSet` is an ordered list of pass names declared by its owner: the front end's
default set, the onnxruntime target's CUDA fusions, TensorRT's parser rewrites, the Ascend
patches. Passes and sets register through the plugin manager (hooks ``register_passes`` and
``register_pass_sets``); a pass in no set, or a set naming a pass nobody registered, is an
error when the registry is built, so nothing is silently left out of a run.

:func:`run_passes` is the one runner: it converts between the two forms only where
consecutive passes differ and returns the model in the form it was given.
``as_onnx_ir_pass`` / :class:`IrPass` adapt in both directions, so a vlc pass can sit in an
``onnx_ir.passes.PassManager`` and an onnx_ir pass can be registered as a vlc pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from vlc import plugin_manager
from vlc.errors import InputError

log = logging.getLogger("vlc.passes")

IR: Final = "ir"  # onnx_ir.Model
PROTO: Final = "proto"  # onnx.ModelProto
FORMS: Final = (IR, PROTO)


@dataclass
class PassRecord:
    """What one pass did to one model.

    `changed` counts the sites rewritten (a pass that counts nothing leaves it 0 and is judged
    modified by its node count); `rules` splits it by rule for passes of several rules, `sites`
    names the nodes per rule where a pass knows them; `notes` are lines for the build log.
    """

    name: str
    keeps_numerics: bool = True
    modified: bool = False
    changed: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    sites: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0

    def add(self, rule: str, site: str | None = None, count: int = 1) -> None:
        """Count `count` rewrites by `rule` (at node `site` when given)."""
        self.changed += count
        self.rules[rule] = self.rules.get(rule, 0) + count
        if site is not None:
            self.sites.setdefault(rule, []).append(site)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "modified": self.modified, "changed": self.changed,
                "rules": dict(self.rules), "sites": {k: list(v) for k, v in self.sites.items()},
                "notes": list(self.notes), "keeps_numerics": self.keeps_numerics,
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "seconds": round(self.seconds, 4)}


@dataclass
class PassResult:
    """onnx_ir's PassResult (`model`, `modified`) plus the pass's record."""

    model: Any
    modified: bool
    record: PassRecord


class GraphPass:
    """A named rewrite of a model. Subclasses implement :meth:`call`; callers use :meth:`run`.

    `form`: the model form `call` takes (IR or PROTO); `run` converts a model of the other form
    first. `keeps_numerics`: the pass leaves every output's value unchanged (its tests compare
    outputs before and after in ONNX Runtime); a pass that trades accuracy says False.
    Passes may change the model they are given, as onnx_ir's in-place passes do: callers that
    need the original copy it first.
    """

    def __init__(self, name: str, summary: str, *, form: str = IR, keeps_numerics: bool = True) -> None:
        if form not in FORMS:
            raise ValueError(f"pass {name}: form must be one of {FORMS}, not {form!r}")
        self.name = name
        self.summary = summary
        self.form = form
        self.keeps_numerics = keeps_numerics

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def context(self, model: Any, given: Any) -> Any:
        """The context `call` gets: the runner's (`given`) by default. A pass that needs its own
        kind of context overrides this to derive one from the model when `given` is not that."""
        return given

    def call(self, model: Any, ctx: Any, record: PassRecord) -> Any:
        """Rewrite `model` (of this pass's form), fill `record`; return the model (the same
        object or a new one; None means the same)."""
        raise NotImplementedError

    def run(self, model: Any, ctx: Any = None) -> PassResult:
        """Run the pass: convert to its form, time it, count nodes before and after."""
        model = to_form(model, self.form)
        record = PassRecord(self.name, keeps_numerics=self.keeps_numerics)
        record.nodes_before = count_nodes(model)
        start = time.perf_counter()
        result = self.call(model, self.context(model, ctx), record)
        record.seconds = time.perf_counter() - start
        model = model if result is None else result
        if form_of(model) != self.form:
            raise TypeError(f"pass {self.name} returned a {form_of(model)} model; it declares {self.form}")
        record.nodes_after = count_nodes(model)
        record.modified = record.modified or record.changed > 0 or record.nodes_after != record.nodes_before
        log.debug("pass %s: %d -> %d nodes, %d changed, %.3f s", self.name, record.nodes_before,
                  record.nodes_after, record.changed, record.seconds)
        return PassResult(model, record.modified, record)


PassFn = Callable[[Any, Any, PassRecord], Any]


class FunctionPass(GraphPass):
    """A pass from a function ``fn(model, ctx, record) -> model | None``."""

    def __init__(self, name: str, summary: str, fn: PassFn, *, form: str = IR,
                 keeps_numerics: bool = True) -> None:
        super().__init__(name, summary, form=form, keeps_numerics=keeps_numerics)
        self.fn = fn

    def call(self, model: Any, ctx: Any, record: PassRecord) -> Any:
        return self.fn(model, ctx, record)


class IrPass(GraphPass):
    """An onnx_ir pass (``onnx_ir.passes.PassBase``, made by `factory` at each run) as a vlc pass;
    modified is what the onnx_ir pass reports."""

    def __init__(self, name: str, summary: str, factory: Callable[[], Any], *,
                 keeps_numerics: bool = True) -> None:
        super().__init__(name, summary, form=IR, keeps_numerics=keeps_numerics)
        self.factory = factory

    def call(self, model: Any, ctx: Any, record: PassRecord) -> Any:
        result = self.factory()(model)
        record.modified = bool(result.modified)
        return result.model


def as_onnx_ir_pass(graph_pass: GraphPass, ctx: Any = None) -> Any:
    """`graph_pass` as an ``onnx_ir.passes.InPlacePass`` (for an onnx_ir PassManager). A pass of
    the PROTO form cannot keep the model object, so it becomes a FunctionalPass instead."""
    import onnx_ir as ir

    base = ir.passes.InPlacePass if graph_pass.form == IR else ir.passes.FunctionalPass

    class _Adapted(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            self.records: list[PassRecord] = []

        def __repr__(self) -> str:
            return f"vlc:{graph_pass.name}"

        def call(self, model: Any) -> Any:
            result = graph_pass.run(model, ctx)
            self.records.append(result.record)
            out = to_form(result.model, IR)
            if out is not model and graph_pass.form == IR:  # a new model from an in-place pass
                _replace_contents(model, out)
                out = model
            return ir.passes.PassResult(out, result.modified)

    return _Adapted()


def _replace_contents(model: Any, new: Any) -> None:
    # onnx_ir checks that an in-place pass returns its input; a pass that built a new Model
    # hands its graph and functions over to the input object
    model.graph = new.graph
    model.functions.clear()
    model.functions.update(new.functions)
    model.opset_imports.clear()
    model.opset_imports.update(new.opset_imports)


@dataclass(frozen=True)
class PassSet:
    """An ordered list of pass names, declared and run by its owner.

    `owner`: who runs it (the front end, a target); `summary`: when it runs. The order is the
    order of a run, whichever subset of the set a run selects (:meth:`select`).
    """

    name: str
    owner: str
    summary: str
    passes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.passes)) != len(self.passes):
            raise ValueError(f"pass set {self.name} lists a pass twice: {self.passes}")

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names that are not passes of this set."""
        return [n for n in names if n not in self.passes]

    def select(self, names: Iterable[str]) -> tuple[str, ...]:
        """`names` in this set's order; a name outside the set is refused in one line."""
        wanted = list(names)
        if unknown := self.unknown(wanted):
            raise InputError(f"'{unknown[0]}' is not a pass of the {self.name} pass set",
                             fix=f"choose from: {', '.join(self.passes)}")
        return tuple(n for n in self.passes if n in wanted)


# ---- forms -------------------------------------------------------------------------------------

def form_of(model: Any) -> str:
    """IR or PROTO, by the model's type (without importing onnx)."""
    kind = type(model)
    if kind.__name__ == "ModelProto" and kind.__module__.startswith("onnx"):
        return PROTO
    if kind.__name__ == "Model" and kind.__module__.startswith("onnx_ir"):
        return IR
    raise TypeError(f"not an ONNX model: {kind.__module__}.{kind.__name__}")


def to_form(model: Any, form: str) -> Any:
    """`model` as an onnx_ir Model (IR) or onnx ModelProto (PROTO); the same object if it is one."""
    if form_of(model) == form:
        return model
    import onnx_ir as ir

    return ir.from_proto(model) if form == IR else ir.to_proto(model)


def count_nodes(model: Any) -> int:
    """Nodes in the main graph and its subgraphs (either form)."""
    if form_of(model) == IR:
        import onnx_ir as ir

        return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
    return _proto_nodes(model.graph)


def _proto_nodes(graph: Any) -> int:
    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            if attr.HasField("g"):
                total += _proto_nodes(attr.g)
            for sub in attr.graphs:
                total += _proto_nodes(sub)
    return total


# ---- the registry and the runner ---------------------------------------------------------------

def registered_passes() -> dict[str, GraphPass]:
    """Every registered pass by name (the registry is checked when first built)."""
    return plugin_manager.passes()


def registered_pass_sets() -> dict[str, PassSet]:
    return plugin_manager.pass_sets()


def get_pass_set(name: str) -> PassSet:
    sets = registered_pass_sets()
    if name not in sets:
        raise InputError(f"unknown pass set '{name}'", fix=f"registered sets: {', '.join(sorted(sets))}")
    return sets[name]


def resolve_passes(names: Iterable[str | GraphPass]) -> list[GraphPass]:
    registry = registered_passes()
    resolved = []
    for name in names:
        if isinstance(name, GraphPass):
            resolved.append(name)
            continue
        if name not in registry:
            raise InputError(f"unknown pass '{name}'",
                             fix=f"available passes: {', '.join(sorted(registry))}")
        resolved.append(registry[name])
    return resolved


def run_passes(model: Any, names: Iterable[str | GraphPass], ctx: Any = None
               ) -> tuple[Any, list[PassRecord]]:
    """Run the named passes in the order given on `model` (either form) with context `ctx`;
    the model in the form it came in and one record per pass."""
    form = form_of(model)
    records = []
    for graph_pass in resolve_passes(names):
        result = graph_pass.run(model, ctx)
        model = result.model
        records.append(result.record)
    return to_form(model, form), records


def run_pass_set(model: Any, pass_set: PassSet | str, ctx: Any = None,
                 only: Iterable[str] | None = None) -> tuple[Any, list[PassRecord]]:
    """Run a pass set (or the passes `only` of it, in the set's order)."""
    chosen = get_pass_set(pass_set) if isinstance(pass_set, str) else pass_set
    names = chosen.passes if only is None else chosen.select(only)
    return run_passes(model, names, ctx)
