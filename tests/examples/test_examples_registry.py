"""The public API of vlc.examples: names, load, describe, sizes, and the front end's refs."""

from __future__ import annotations

import pytest

from vlc import examples
from vlc.errors import InputError, VlcError
from vlc.model import BATCH, ModelSource

# Parameter counts of the full-size models, from models built on the meta device.
# CLIP ViT-B/32: 87.8M (vision tower + 768x512 projection) and 63.4M (text tower + 512x512
# projection), as openai/clip-vit-base-patch32; MobileViT-S: 5.6M as in the paper;
# ViLBERT (allennlp, bert-base): 110M BERT + 38M image stream + 84M co-attention + heads.
FULL_PARAMETERS = {
    "vilbert-vqa": 244_931_882,
    "clip-vit-b32-image": 87_849_216,
    "clip-vit-b32-text": 63_428_096,
    "mobilevit-s": 5_578_632,
}

REFERENCE_IO = {
    "vilbert-vqa": (
        {"box_features": ("float32", [BATCH, 100, 1024]),
         "box_coordinates": ("float32", [BATCH, 100, 4]),
         "box_mask": ("bool", [BATCH, 100]), "token_ids": ("int64", [BATCH, 32]),
         "mask": ("bool", [BATCH, 32]), "type_ids": ("int64", [BATCH, 32])},
        {"logits": ("float32", [BATCH, 10026]), "probs": ("float32", [BATCH, 10026])}),
    "clip-vit-b32-image": ({"pixel_values": ("float32", [BATCH, 3, 224, 224])},
                           {"image_embeds": ("float32", [BATCH, 512])}),
    "clip-vit-b32-text": ({"input_ids": ("int64", [BATCH, 77]),
                           "attention_mask": ("int64", [BATCH, 77])},
                          {"text_embeds": ("float32", [BATCH, 512])}),
    "mobilevit-s": ({"pixel_values": ("float32", [BATCH, 3, 256, 256])},
                    {"logits": ("float32", [BATCH, 1000])}),
}

DEFAULT_SWEEPS = {
    "vilbert-vqa": [8, 16, 32, 64, 128, 256],
    "clip-vit-b32-image": [64, 768, 1024],
    "clip-vit-b32-text": [64, 256, 1024],
    "mobilevit-s": [1, 16, 32],
}


def test_names_are_the_reference_workloads():
    assert examples.names() == list(REFERENCE_IO)


def test_full_size_describes_the_reference_io_sweep_and_parameters(name):
    info = examples.describe(name)
    inputs, outputs = REFERENCE_IO[name]
    assert {i["name"]: (i["dtype"], i["shape"]) for i in info["inputs"]} == inputs
    assert [i["name"] for i in info["inputs"]] == list(inputs)  # forward's argument order
    assert {o["name"]: (o["dtype"], o["shape"]) for o in info["outputs"]} == outputs
    assert info["batch_sizes"] == DEFAULT_SWEEPS[name]
    assert info["parameters"] == FULL_PARAMETERS[name]
    assert info["reference"]["workload"] and info["summary"] and info["weights"]


def test_describe_test_size_matches_the_built_source(name, test_source):
    info = examples.describe(name, size="test")
    source = test_source(name)
    assert [i["name"] for i in info["inputs"]] == [s.name for s in source.inputs]
    assert [o["name"] for o in info["outputs"]] == source.output_names
    assert info["parameters"] == source.metadata["parameters"]
    assert info["parameters"] < 1_000_000  # test sizes stay tiny
    assert info["batch_sizes"] == list(source.batch_sizes)


def test_load_gives_an_eval_model_source(name, test_source):
    source = test_source(name)
    assert isinstance(source, ModelSource)
    assert source.name == source.ref == f"{name}@test"  # the size is part of the name
    assert not source.module.training
    assert source.dynamic_batch
    assert source.metadata["weights"].startswith("random")
    assert source.metadata["size"] == "test"


def test_unknown_name_lists_the_examples():
    with pytest.raises(InputError) as err:
        examples.load("vilbert")
    for name in examples.names():
        assert name in err.value.line()
    with pytest.raises(InputError):
        examples.describe("resnet50")


def test_unknown_size_is_refused():
    with pytest.raises(InputError, match="unknown size 'tiny'"):
        examples.load("mobilevit-s", size="tiny")


def test_front_end_resolves_name_and_name_at_test():
    from vlc.frontend.loader import load_model

    source = load_model("clip-vit-b32-text@test")
    assert isinstance(source, ModelSource)
    assert source.ref == "clip-vit-b32-text@test" and source.metadata["size"] == "test"
    with pytest.raises(VlcError):
        load_model("clip-vit-b32-text@tiny")


def test_random_weights_are_seeded(name, test_source):
    again = examples.load(name, size="test")
    first = test_source(name).module.state_dict()
    for key, tensor in again.module.state_dict().items():
        assert tensor.equal(first[key]), key
