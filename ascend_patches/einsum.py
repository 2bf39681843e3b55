"""ascend-einsum: two-input Einsum -> Transpose / (Reshape) / MatMul / Transpose.

ATC parses Einsum only for two inputs and a fixed list of equations. Any two-operand
equation without repeated letters within one operand is rewritten: letters in both operands
and the output are batch axes, letters in both but not the output are contracted, the rest are
free. Groups of more than one free or contracted letter need a Reshape, so static shapes
(freeze shapes first); single-letter groups need none. An ellipsis (`...pd,...qd->...pq`, as
einops-style attention code writes batched matmuls) stands for as many axes as the operand's
rank leaves, aligned from the right as NumPy does: each becomes a letter of its own, so the
ellipsis axes of both operands are batch axes and may stay dynamic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlc.ascend_patches.core import PatchContext, PatchRecord, patch
from vlc.ascend_patches.graph import (
    Graph,
    attr,
    infer_shapes,
    node,
    opset,
    squeeze_node,
    standard_nodes,
    static_shape,
    unsqueeze_node,
    value_types,
)


@dataclass(frozen=True)
class Equation:
    a: str
    b: str
    out: str

    @classmethod
    def parse(cls, text: str, ranks: tuple[int | None, ...] = (None, None)) -> Equation | None:
        """The equation with every ellipsis spelled out as letters (needs the operands' ranks)."""
        text = text.replace(" ", "")
        lhs, arrow, out = text.partition("->")
        operands = lhs.split(",")
        if len(operands) != 2:
            return None
        ellipsis = ""
        if "." in text:
            expanded = _expand_ellipsis(operands, out if arrow else None, ranks)
            if expanded is None:
                return None
            operands, out, ellipsis = expanded
        a, b = operands
        if not arrow:
            letters = a + b
            out = ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1
                                            and c not in ellipsis))
        if len(set(a)) != len(a) or len(set(b)) != len(b) or len(set(out)) != len(out):
            return None
        if not set(out) <= set(a) | set(b):
            return None
        return cls(a, b, out)


def _expand_ellipsis(operands: list[str], out: str | None, ranks: tuple[int | None, ...]
                     ) -> tuple[list[str], str, str] | None:
    """(operands, output, ellipsis letters) with '...' replaced by fresh letters, right-aligned.

    None when a rank is unknown or the equation is malformed (the Einsum is then left as it is).
    """
    used = set("".join(operands) + (out or "")) - {"."}
    fresh = [c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBA" if c not in used]
    counts = []
    for operand, rank in zip(operands, ranks):
        if operand.count("...") > 1 or operand.replace("...", "").count(".") or (
                "..." in operand and rank is None):
            return None
        counts.append(rank - len(operand.replace("...", "")) if "..." in operand and rank is not None else 0)
    if min(counts) < 0 or max(counts) > len(fresh):
        return None
    letters = "".join(reversed(fresh[:max(counts)]))  # the leading ellipsis axis first
    expanded = [op.replace("...", letters[len(letters) - n:]) if "..." in op else op
                for op, n in zip(operands, counts)]
    if out is None:
        return expanded, None, letters  # type: ignore[return-value]
    if out.replace("...", "").count(".") or out.count("...") > 1:
        return None
    return expanded, out.replace("...", letters), letters


def _reduce(g: Graph, data: str, axes: list[int], out: str, name: str) -> list[Any]:
    if opset(g.model) >= 13:
        axes_name = g.add_constant(f"{name}_axes", np.array(axes, dtype=np.int64))
        return [node("ReduceSum", [data, axes_name], [out], name=name, keepdims=0)]
    return [node("ReduceSum", [data], [out], name=name, axes=axes, keepdims=0)]


def decompose(g: Graph, n: Any, eq: Equation, shapes: tuple[tuple[int, ...] | None, ...]
              ) -> list[Any] | None:
    """Nodes computing Einsum `n` with MatMul, or None when this equation needs static shapes."""
    base = n.name or n.output[0]
    nodes: list[Any] = []
    a_name, b_name = n.input[0], n.input[1]
    a, b = eq.a, eq.b
    sizes: dict[str, int] = {}
    for letters, shape in ((a, shapes[0]), (b, shapes[1])):
        if shape is not None:
            sizes.update(zip(letters, shape))
    # Letters only in one operand and not in the output are summed away first.
    for which in ("a", "b"):
        letters, other, name = (a, b, a_name) if which == "a" else (b, a, b_name)
        summed = [c for c in letters if c not in other and c not in eq.out]
        if summed:
            reduced = g.fresh(f"{base}_{which}_sum")
            nodes += _reduce(g, name, [letters.index(c) for c in summed], reduced, f"{base}_{which}_sum")
            letters = "".join(c for c in letters if c not in summed)
            if which == "a":
                a, a_name = letters, reduced
            else:
                b, b_name = letters, reduced
    batch = [c for c in eq.out if c in a and c in b]
    contract = [c for c in a if c in b and c not in eq.out]
    lfree = [c for c in eq.out if c in a and c not in b]
    rfree = [c for c in eq.out if c in b and c not in a]
    need_reshape = len(lfree) > 1 or len(rfree) > 1 or len(contract) > 1
    if need_reshape and not all(c in sizes for c in lfree + rfree + contract):
        return None

    def transpose(name: str, letters: str, order: list[str], tag: str) -> str:
        perm = [letters.index(c) for c in order]
        if perm == list(range(len(perm))):
            return name
        out = g.fresh(f"{base}_{tag}_t")
        nodes.append(node("Transpose", [name], [out], name=f"{base}_{tag}_transpose", perm=perm))
        return out

    a_t = transpose(a_name, a, batch + lfree + contract, "a")
    b_t = transpose(b_name, b, batch + contract + rfree, "b")
    nb = len(batch)

    def reshape(name: str, dims: list[int], tag: str) -> str:
        out = g.fresh(f"{base}_{tag}_r")
        # 0 copies the batch axes from the input, so batch axes may stay dynamic.
        shape = g.add_constant(f"{base}_{tag}_shape", np.array([0] * nb + dims, dtype=np.int64))
        nodes.append(node("Reshape", [name, shape], [out], name=f"{base}_{tag}_reshape"))
        return out

    def prod(letters: list[str]) -> int:
        return math.prod(sizes[c] for c in letters)

    if need_reshape:
        a_t = reshape(a_t, [prod(lfree), prod(contract)], "a")
        b_t = reshape(b_t, [prod(contract), prod(rfree)], "b")
    else:
        if not contract:  # outer product: K = 1
            a2, b2 = g.fresh(f"{base}_a_k"), g.fresh(f"{base}_b_k")
            nodes += unsqueeze_node(g, a_t, [nb + len(lfree)], a2, f"{base}_a_k")
            nodes += unsqueeze_node(g, b_t, [nb], b2, f"{base}_b_k")
            a_t, b_t = a2, b2
        if not lfree:
            a2 = g.fresh(f"{base}_a_l")
            nodes += unsqueeze_node(g, a_t, [nb], a2, f"{base}_a_l")
            a_t = a2
        if not rfree:
            b2 = g.fresh(f"{base}_b_r")
            nodes += unsqueeze_node(g, b_t, [nb + 1], b2, f"{base}_b_r")
            b_t = b2
    product = g.fresh(f"{base}_mm")
    nodes.append(node("MatMul", [a_t, b_t], [product], name=f"{base}_matmul"))
    current = batch + lfree + rfree
    if need_reshape:
        shaped = g.fresh(f"{base}_out_r")
        out_shape = g.add_constant(f"{base}_out_shape", np.array(
            [0] * nb + [sizes[c] for c in lfree + rfree], dtype=np.int64))
        nodes.append(node("Reshape", [product, out_shape], [shaped], name=f"{base}_out_reshape"))
        product = shaped
    else:
        drop = []
        if not lfree:
            drop.append(nb)
        if not rfree:
            drop.append(nb + (len(lfree) if lfree else 1))
        if drop:
            squeezed = g.fresh(f"{base}_sq")
            nodes += squeeze_node(g, product, drop, squeezed, f"{base}_squeeze")
            product = squeezed
    perm = [current.index(c) for c in eq.out]
    if perm == list(range(len(perm))):
        nodes.append(node("Identity", [product], [n.output[0]], name=base))
    else:
        nodes.append(node("Transpose", [product], [n.output[0]], name=base, perm=perm))
    return nodes


def _rank(types: dict[str, Any], name: str) -> int | None:
    entry = types.get(name)
    return None if entry is None or entry[1] is None else len(entry[1])


@patch("ascend-einsum", "two-input Einsum -> Transpose/Reshape/MatMul (ATC parses only a fixed "
       "list of Einsum equations)")
def einsum_to_matmul(model: Any, ctx: PatchContext, record: PatchRecord) -> Any:
    nodes = standard_nodes(model, "Einsum")
    if not nodes:
        return model
    types = value_types(infer_shapes(model))
    g = Graph(model)
    for n in nodes:
        base = n.name or n.output[0]
        text = attr(n, "equation", b"")
        ranks = tuple(_rank(types, name) for name in n.input)
        eq = Equation.parse(text.decode() if isinstance(text, bytes) else str(text), ranks)
        if eq is None or len(n.input) != 2:
            record.notes.append(f"skipped {base}: equation not two operands of known rank")
            continue
        shapes = (static_shape(types, n.input[0]), static_shape(types, n.input[1]))
        replacement = decompose(g, n, eq, shapes)
        if replacement is None:
            record.notes.append(f"skipped {base}: needs static shapes (freeze shapes first)")
            continue
        g.replace_node(n, replacement)
        record.changed += 1
    g.remove_unused()
    return model
