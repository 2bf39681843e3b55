"""Source patches: a nested-dict forward flattened into named positional tensors, and finite masks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

torch = pytest.importorskip("torch")

from vlc.ascend_patches.torch_patches import SOURCE_PATCHES, FlattenInputs, apply_source_patches, flatten_nested  # noqa: E402
from vlc.errors import InputError  # noqa: E402


class NestedModel(torch.nn.Module):
    """A forward with nested dict inputs and a dict output, as the ViLBERT source had."""

    def __init__(self):
        super().__init__()
        self.img = torch.nn.Linear(6, 4)
        self.txt = torch.nn.Embedding(10, 4)

    def forward(self, image, text):
        scores = self.img(image["features"]).mean(1) + self.txt(text["ids"]).mean(1)
        scores = scores.masked_fill(~text["mask"][:, :1].expand_as(scores), float("-inf"))
        return {"scores": scores, "probs": torch.softmax(scores, -1)}


@dataclass
class Source:  # the fields of vlc.model.ModelSource that source patches use
    module: object
    metadata: dict = field(default_factory=dict)


def example():
    g = torch.Generator().manual_seed(0)
    return {"image": {"features": torch.randn(2, 3, 6, generator=g)},
            "text": {"ids": torch.randint(0, 10, (2, 5), generator=g), "mask": torch.tensor([[True] * 5, [False] * 5])}}


def test_flatten_layout_names():
    assert [n for n, _ in flatten_nested(example())] == ["image__features", "text__ids", "text__mask"]


def test_flattened_module_matches_and_exports():
    model = NestedModel().eval()
    inputs = example()
    wrapped = FlattenInputs(model, flatten_nested(inputs))
    flat = [inputs["image"]["features"], inputs["text"]["ids"], inputs["text"]["mask"]]
    expected = model(**inputs)
    got = wrapped(*flat)
    assert wrapped.output_names == ["scores", "probs"]
    torch.testing.assert_close(got[1], expected["probs"], equal_nan=True)
    exported = torch.export.export(wrapped, tuple(flat))  # positional tensors: exportable
    assert len(exported.graph_signature.user_inputs) == 3


def test_finite_masked_fill_patch():
    model = NestedModel().eval()
    inputs = example()
    source = apply_source_patches(Source(model, {"nested_example": inputs}),
                                  ["flatten-dict-inputs", "finite-masked-fill"])
    flat = [inputs["image"]["features"], inputs["text"]["ids"], inputs["text"]["mask"]]
    scores, probs = source.module(*flat)
    assert torch.isfinite(scores).all() and scores.min() == -65504.0
    torch.testing.assert_close(probs[0], model(**inputs)["probs"][0])
    assert torch.Tensor.masked_fill.__name__ == "masked_fill"  # restored after the call


def test_unknown_source_patch():
    assert set(SOURCE_PATCHES) == {"flatten-dict-inputs", "finite-masked-fill"}
    with pytest.raises(InputError, match="unknown source patch"):
        apply_source_patches(Source(None), ["nope"])
