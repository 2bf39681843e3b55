"""Real weights from local files: round trips in every accepted format, and clear refusals."""

from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vlc import examples
from vlc.errors import VlcError
from vlc.frontend.pipeline import torch_outputs


def perturbed_state(source) -> dict[str, torch.Tensor]:
    """The example's weights, changed so that a load that silently kept random ones would show."""
    generator = torch.Generator().manual_seed(7)
    state = {}
    for key, tensor in source.module.state_dict().items():
        if tensor.is_floating_point() and "running_var" not in key:
            tensor = tensor + 0.05 * torch.randn(tensor.shape, generator=generator)
        state[key] = tensor.clone()
    return state


def outputs(source, batch: int = 2) -> dict[str, np.ndarray]:
    return torch_outputs(source, source.generate_inputs(batch, seed=11))


def assert_same_outputs(a, b) -> None:
    out_a, out_b = outputs(a), outputs(b)
    for key in out_a:
        np.testing.assert_array_equal(out_a[key], out_b[key], err_msg=key)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_round_trip(name, suffix, test_source, tmp_path):
    state = perturbed_state(test_source(name))
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    loaded = examples.load(name, size="test", weights=str(path))
    assert loaded.metadata["weights"] == str(path)
    for key, tensor in loaded.module.state_dict().items():
        assert tensor.equal(state[key]), key
    expected = copy.deepcopy(test_source(name))
    expected.module.load_state_dict(state)
    assert_same_outputs(loaded, expected)
    first = loaded.output_names[0]
    assert not np.allclose(outputs(loaded)[first], outputs(test_source(name))[first])


def _archive(path: Path, state: dict[str, torch.Tensor], member: str = "weights.th") -> Path:
    """An allennlp-style model.tar.gz: config.json, vocabulary/, weights.th."""
    with tarfile.open(path, "w:gz") as tar:
        config = json.dumps({"model": {"type": "vqa_vilbert"}}).encode()
        for arcname, data in (("config.json", config), ("vocabulary/answers.txt", b"yes\nno\n")):
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        info = tarfile.TarInfo(member)
        info.size = buffer.tell()
        buffer.seek(0)
        tar.addfile(info, buffer)
    return path


def test_vilbert_loads_an_allennlp_archive(test_source, tmp_path):
    state = perturbed_state(test_source("vilbert-vqa"))
    archive = _archive(tmp_path / "model.tar.gz", state)
    loaded = examples.load("vilbert-vqa", size="test", weights=archive)
    for key, tensor in loaded.module.state_dict().items():
        assert tensor.equal(state[key]), key
    # an unpacked archive directory works too
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    assert_same_outputs(loaded, examples.load("vilbert-vqa", size="test", weights=unpacked))


def test_vilbert_maps_dataparallel_and_huggingface_spellings(test_source, tmp_path):
    state = perturbed_state(test_source("vilbert-vqa"))
    spelled = {"module." + k.replace(".layer_norm.weight", ".LayerNorm.gamma")
                                .replace(".layer_norm.bias", ".LayerNorm.beta"): v
               for k, v in state.items()}
    spelled["module.backbone.text_embeddings.position_ids"] = torch.arange(32)
    assert any(".LayerNorm.gamma" in k for k in spelled)
    torch.save({"state_dict": spelled}, tmp_path / "best.th")
    loaded = examples.load("vilbert-vqa", size="test", weights=tmp_path / "best.th")
    for key, tensor in loaded.module.state_dict().items():
        assert tensor.equal(state[key]), key


def test_clip_encoders_load_a_huggingface_clip_directory(test_source, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from vlc.examples import clip

    config = CLIPConfig(text_config=clip.text_config("test").to_dict(),
                        vision_config=clip.vision_config("test").to_dict(), projection_dim=16)
    torch.manual_seed(3)
    full = CLIPModel(config).eval()
    full.save_pretrained(tmp_path / "clip")

    image = examples.load("clip-vit-b32-image", size="test", weights=tmp_path / "clip")
    pixels = torch.from_numpy(image.generate_inputs(2, seed=0)["pixel_values"])
    with torch.no_grad():
        expected = full.visual_projection(full.vision_model(pixel_values=pixels).pooler_output)
        torch.testing.assert_close(image.module(pixels), expected)

    text = examples.load("clip-vit-b32-text", size="test", weights=tmp_path / "clip")
    feeds = {k: torch.from_numpy(v) for k, v in text.generate_inputs(2, seed=0).items()}
    with torch.no_grad():
        pooled = full.text_model(**feeds).pooler_output
        torch.testing.assert_close(text.module(**feeds), full.text_projection(pooled))

    # the full model's state dict serves either encoder too (the other tower is dropped)
    torch.save(full.state_dict(), tmp_path / "clip.pt")
    from_file = examples.load("clip-vit-b32-image", size="test", weights=tmp_path / "clip.pt")
    assert_same_outputs(image, from_file)


def test_mobilevit_loads_a_huggingface_directory(test_source, tmp_path):
    source = test_source("mobilevit-s")
    source.module.model.save_pretrained(tmp_path / "mobilevit")
    loaded = examples.load("mobilevit-s", size="test", weights=tmp_path / "mobilevit")
    assert_same_outputs(source, loaded)


def test_missing_path_is_refused(name, tmp_path):
    with pytest.raises(VlcError, match="does not exist"):
        examples.load(name, size="test", weights=tmp_path / "nope.pt")


def test_weights_of_another_model_are_refused(test_source, tmp_path):
    torch.save(test_source("mobilevit-s").module.state_dict(), tmp_path / "mobilevit.pt")
    with pytest.raises(VlcError, match="do not fit vilbert-vqa.*missing"):
        examples.load("vilbert-vqa", size="test", weights=tmp_path / "mobilevit.pt")


def test_weights_of_another_size_are_refused(test_source, tmp_path):
    state = test_source("clip-vit-b32-text").module.state_dict()
    state["model.text_projection.weight"] = torch.zeros(8, 8)
    torch.save(state, tmp_path / "text.pt")
    with pytest.raises(VlcError, match="another shape.*text_projection.weight \\[8, 8\\]"):
        examples.load("clip-vit-b32-text", size="test", weights=tmp_path / "text.pt")


def test_huggingface_directory_of_another_model_is_refused(test_source, tmp_path):
    test_source("mobilevit-s").module.model.save_pretrained(tmp_path / "mobilevit")
    with pytest.raises(VlcError, match="holds a 'mobilevit' model, not clip or clip_vision_model"):
        examples.load("clip-vit-b32-image", size="test", weights=tmp_path / "mobilevit")
    # a directory that claims the right type but lacks the weights is refused too
    config = json.loads((tmp_path / "mobilevit" / "config.json").read_text())
    (tmp_path / "mobilevit" / "config.json").write_text(json.dumps(config | {"model_type": "clip"}))
    with pytest.raises(VlcError, match="lacks .* weights a CLIPVisionModelWithProjection needs"):
        examples.load("clip-vit-b32-image", size="test", weights=tmp_path / "mobilevit")


@pytest.mark.parametrize("filename, content, message", [
    ("broken.pt", b"not a pickle", "cannot read weights file"),
    ("broken.safetensors", b"\x00" * 16, "cannot read weights file"),
    ("weights.npz", b"", "cannot tell the format"),
    ("list.pt", None, "not a state dict"),
])
def test_unreadable_files_are_refused(filename, content, message, tmp_path):
    path = tmp_path / filename
    if content is None:
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(VlcError, match=message):
        examples.load("vilbert-vqa", size="test", weights=path)


def test_archive_without_weights_and_empty_directory_are_refused(tmp_path):
    archive = _archive(tmp_path / "model.tar.gz", {"x": torch.zeros(1)}, member="other.th")
    with pytest.raises(VlcError, match="holds no weights.th"):
        examples.load("vilbert-vqa", size="test", weights=archive)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VlcError, match="holds neither"):
        examples.load("vilbert-vqa", size="test", weights=tmp_path / "empty")
