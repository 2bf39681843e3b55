"""Each example at test size: forward runs, outputs spread, and the generators make valid inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vlc.examples import clip, vilbert
from vlc.frontend.pipeline import torch_outputs
from vlc.signature import Signature, TensorSig

BATCH = 4


def assert_spread(name: str, out: np.ndarray) -> None:
    """Outputs that prove something: finite, spread across classes, different for every sample."""
    a = out.reshape(out.shape[0], -1).astype(np.float64)
    assert np.isfinite(a).all(), name
    assert a.std() > 1e-2, f"{name}: std {a.std():.2e}"
    assert a.std(axis=1).min() > 1e-2, f"{name}: a sample's outputs are (nearly) constant"
    across = a.std(axis=0).mean() / a.std()
    assert across > 0.05, f"{name}: outputs barely depend on the input ({across:.3f})"
    for i, j in itertools.combinations(range(len(a)), 2):
        assert np.abs(a[i] - a[j]).max() > 1e-2, f"{name}: samples {i} and {j} give the same output"


def test_forward_outputs_are_non_degenerate(name, test_source):
    source = test_source(name)
    outputs = torch_outputs(source, source.generate_inputs(BATCH, seed=0))
    assert list(outputs) == source.output_names
    for out_name, out in outputs.items():
        assert out.shape[0] == BATCH and out.dtype == np.float32
        assert_spread(f"{name}:{out_name}", out)


def test_generated_inputs_fit_the_specs_at_any_batch(name, test_source):
    source = test_source(name)
    signature = Signature(tuple(s.sig() for s in source.inputs),
                          tuple(TensorSig(o, "float32", ("batch",)) for o in source.output_names))
    for batch in (1, 3):
        feeds = source.generate_inputs(batch, seed=5)
        assert signature.validate_inputs(feeds) == batch
    same = source.generate_inputs(3, seed=5)
    other = source.generate_inputs(3, seed=6)
    assert all(np.array_equal(same[k], v) for k, v in source.generate_inputs(3, seed=5).items())
    assert any(not np.array_equal(same[k], other[k]) for k in same)


def test_vilbert_inputs_are_tokenised_questions_and_valid_regions(test_source):
    cfg = vilbert.TEST
    feeds = test_source("vilbert-vqa").generate_inputs(32, seed=0)
    ids, mask, types = feeds["token_ids"], feeds["mask"], feeds["type_ids"]
    assert ids.min() >= 0 and ids.max() < cfg.vocab_size
    assert (ids[:, 0] == cfg.cls_token_id).all()
    lengths = mask.sum(axis=1)
    assert (mask == (np.arange(ids.shape[1]) < lengths[:, None])).all()  # a prefix of the row
    assert (ids[np.arange(len(ids)), lengths - 1] == cfg.sep_token_id).all()
    assert (ids[~mask] == cfg.pad_token_id).all()
    words = ids[:, 1:][mask[:, 1:] & (ids[:, 1:] != cfg.sep_token_id)]
    assert words.min() >= cfg.first_word_id and words.max() < cfg.vocab_size
    assert len(set(lengths)) > 1 and lengths.min() >= 5
    assert ((types >= 0) & (types < cfg.type_vocab_size)).all()

    boxes, coords, box_mask = feeds["box_features"], feeds["box_coordinates"], feeds["box_mask"]
    assert box_mask.dtype == bool and box_mask[:, 0].all()
    counts = box_mask.sum(axis=1)
    assert (box_mask == (np.arange(cfg.num_boxes) < counts[:, None])).all()
    assert (counts == cfg.num_boxes).any() and (counts < cfg.num_boxes).any()  # some padded
    x1, y1, x2, y2 = (coords[..., k][box_mask] for k in range(4))
    assert (x1 >= 0).all() and (x2 <= 1).all() and (x1 < x2).all()
    assert (y1 >= 0).all() and (y2 <= 1).all() and (y1 < y2).all()
    assert (coords[:, 0] == [0, 0, 1, 1]).all()  # region 0 is the whole image
    assert (boxes[~box_mask] == 0).all() and (coords[~box_mask] == 0).all()
    assert boxes.min() >= 0 and boxes[box_mask].std() > 0.1


def test_vilbert_ignores_what_the_masks_hide(test_source):
    source = test_source("vilbert-vqa")
    feeds = source.generate_inputs(4, seed=3)
    assert (~feeds["mask"]).any() and (~feeds["box_mask"]).any()
    changed = {k: v.copy() for k, v in feeds.items()}
    rng = np.random.default_rng(0)
    changed["token_ids"][~feeds["mask"]] = rng.integers(
        vilbert.TEST.first_word_id, vilbert.TEST.vocab_size, size=(~feeds["mask"]).sum())
    changed["box_features"][~feeds["box_mask"]] = 5.0
    changed["box_coordinates"][~feeds["box_mask"]] = 0.5
    before, after = torch_outputs(source, feeds), torch_outputs(source, changed)
    np.testing.assert_allclose(after["logits"], before["logits"], atol=1e-5)
    # and what they show matters
    changed["token_ids"][:, 1] = vilbert.TEST.first_word_id
    assert not np.allclose(torch_outputs(source, changed)["logits"], before["logits"], atol=1e-3)


def test_clip_text_inputs_are_tokenised_captions(test_source):
    source = test_source("clip-vit-b32-text")
    vocab = source.module.model.config.vocab_size
    feeds = source.generate_inputs(32, seed=0)
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert mask.dtype == np.int64 and set(np.unique(mask)) == {0, 1}
    lengths = mask.sum(axis=1)
    assert (mask == (np.arange(ids.shape[1]) < lengths[:, None])).all()
    assert ids.min() >= 0 and ids.max() < vocab
    assert (ids[:, 0] == vocab - 2).all()  # <|startoftext|>
    end = lengths - 1
    assert (ids[np.arange(len(ids)), end] == vocab - 1).all()  # <|endoftext|>
    assert (ids.argmax(axis=1) == end).all()  # where transformers pools the text
    inner = ids[:, 1:][mask[:, 1:].astype(bool) & (ids[:, 1:] < vocab - 1)]
    assert inner.min() >= clip.FIRST_WORD_ID and inner.max() < vocab - 2


@pytest.mark.parametrize("image", ["clip-vit-b32-image", "mobilevit-s"])
def test_images_are_pixels_in_unit_range_with_spatial_structure(image, test_source):
    pixels = test_source(image).generate_inputs(4, seed=0)["pixel_values"]
    if image.startswith("clip"):  # undo CLIP's normalisation
        pixels = pixels * np.reshape(clip.STD, (1, 3, 1, 1)) + np.reshape(clip.MEAN, (1, 3, 1, 1))
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert pixels.std() > 0.15  # not constant
    # neighbouring pixels are correlated, as in photographs (white noise would give ~0)
    a, b = pixels[..., :, :-1].ravel(), pixels[..., :, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.5


def test_random_weights_have_no_foldable_constants(name, test_source):
    # zero biases and unit norm scales would let the simplifier delete ops a trained model keeps
    import torch

    module = test_source(name).module
    biases = [m.bias for m in module.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None]
    norms = [m.weight for m in module.modules() if isinstance(m, torch.nn.LayerNorm) and m.weight is not None]
    assert biases and all(float(b.abs().min()) > 0 for b in biases)
    assert all(float((w - 1).abs().max()) > 1e-3 for w in norms)
