"""ViLBERT for VQA: the allennlp `VqaVilbert` model rewritten in plain PyTorch.

Two streams joined by co-attention (Lu et al. 2019), as configured in allennlp-models'
`vilbert_vqa_pretrained.jsonnet`: a BERT-base text stream (12 layers, hidden 768, 12 heads,
GELU), an image stream over region features (6 layers, hidden 1024, 8 heads, intermediate
1024), 6 co-attention layers (bi-hidden 1024, 8 bi-heads) placed before text layers 6..11 and
image layers 0..5, ReLU poolers over the first token and first region, fused by
multiplication, and a linear classifier over 10026 answers with sigmoid probabilities
(VQA is multi-label).

I/O (the reference workload's): box_features f32 [B,100,1024], box_coordinates f32
[B,100,4] (x1, y1, x2, y2 normalised to [0, 1]), box_mask bool [B,100] (True = a real
region; the export code of the reference uses bool, and the model also accepts 0/1 floats
in PyTorch), token_ids int64 [B,32], mask bool [B,32], type_ids int64 [B,32] ->
logits f32 [B,10026], probs f32 [B,10026].

Faithful to allennlp where it shapes the exported graph, since vlc's graph fixes target it:
- padding masks are added to the attention scores as `(1 - mask) * finfo(float32).min`, the
  Mul constant that Ascend's fp16 flow must clamp to +-65504;
- attention is explicit MatMul / Softmax / MatMul, LayerNorm eps is 1e-12;
- the encoder stacks the output of every co-attention layer and takes `[..., -1]` (the
  Gather with constant index -1 of the reference graph), and, as in allennlp, the stream
  layers after the last co-attention layer (text 11, image 5) run but do not reach the
  outputs, so the exporter drops them.

Weights: the module names mirror allennlp 2.x's `VqaVilbert.state_dict()`, so an allennlp
archive's `weights.th` loads by identity. The renames applied first (see `allennlp_name`):

| in the file                          | in this model            |
|--------------------------------------|--------------------------|
| `module.<name>` (DataParallel)       | `<name>`                 |
| `...LayerNorm.{weight,bias}` (HF)    | `...layer_norm.{...}`    |
| `...LayerNorm.{gamma,beta}` (TF BERT)| `...layer_norm.{weight,bias}` |
| `...position_ids` buffers            | dropped                  |

Layout: `backbone.text_embeddings.{embeddings.{word,position,token_type}_embeddings,
layer_norm}`, `backbone.image_embeddings.{embeddings.{image,location}_embeddings,
layer_norm}`, `backbone.encoder.layers1.N` / `layers2.N` (`attention.self.{query,key,value}`,
`attention.output.{dense,layer_norm}`, `intermediate.dense`, `output.{dense,layer_norm}`),
`backbone.encoder.c_layer.N` (`bimodal_attention.{query,key,value}{1,2}`,
`bimodal_output.bert_output{1,2}.{dense,layer_norm}`, `intermediate{1,2}.dense`,
`output{1,2}.{dense,layer_norm}`), `backbone.{t,v}_pooler.dense`, `classifier`.
Checkpoints of facebookresearch/vilbert-multi-task (`bert.encoder.v_layer`, `biattention`,
a two-layer `vil_prediction` head) use another head and are not mapped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlc.errors import InputError
from vlc.examples import inputs as gen
from vlc.examples import weights as wts
from vlc.examples.random_init import jittered_norms, lecun_linears, seeded
from vlc.examples.registry import Built, meta_parameters
from vlc.model import BATCH, InputSpec
from vlc.signature import TensorSig

NAME = "vilbert-vqa"
SEED = 2019
EMBEDDING_STD = 0.02  # BERT's initializer_range
WEIGHTS_NOTE = ("random (seeded, scaled to keep activations at unit size) unless --weights "
                "names an allennlp archive (.tar.gz with weights.th), its unpacked directory, "
                "or a state dict (.pt/.pth/.th/.safetensors) with allennlp VqaVilbert names")


@dataclass(frozen=True)
class VilbertConfig:
    vocab_size: int = 30522  # bert-base-uncased
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    text_hidden_size: int = 768
    text_num_layers: int = 12
    text_num_heads: int = 12
    text_intermediate_size: int = 3072
    image_feature_dim: int = 1024
    image_hidden_size: int = 1024
    image_num_layers: int = 6
    image_num_heads: int = 8
    image_intermediate_size: int = 1024
    combined_hidden_size: int = 1024
    combined_num_heads: int = 8
    # Co-attention layer k runs before text layer text_biattention_id[k] and image layer
    # image_biattention_id[k] (allennlp's BiModalEncoder semantics).
    text_biattention_id: tuple[int, ...] = (6, 7, 8, 9, 10, 11)
    image_biattention_id: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    pooled_output_dim: int = 1024
    fusion_method: str = "mul"
    num_labels: int = 10026
    layer_norm_eps: float = 1e-12
    num_boxes: int = 100
    num_tokens: int = 32
    pad_token_id: int = 0  # [PAD]
    cls_token_id: int = 101  # [CLS]
    sep_token_id: int = 102  # [SEP]
    first_word_id: int = 999  # ids below are [unused*] and special tokens in BERT's vocabulary

    def __post_init__(self) -> None:
        if len(self.text_biattention_id) != len(self.image_biattention_id):
            raise InputError("ViLBERT needs as many text as image co-attention positions",
                             fix="give text_biattention_id and image_biattention_id equal lengths")
        for ids, layers, which in ((self.text_biattention_id, self.text_num_layers, "text"),
                                   (self.image_biattention_id, self.image_num_layers, "image")):
            if list(ids) != sorted(ids) or (ids and not 0 <= ids[0] <= ids[-1] <= layers):
                raise InputError(f"{which}_biattention_id {list(ids)} must be ascending layer "
                                 f"positions within 0..{layers}")
        if self.fusion_method not in ("sum", "mul"):
            raise InputError(f"unknown fusion method '{self.fusion_method}'", fix="use sum or mul")
        if not self.first_word_id < self.vocab_size:
            raise InputError("first_word_id must lie inside the vocabulary")


FULL = VilbertConfig()
TEST = replace(FULL, vocab_size=2048, text_hidden_size=32, text_num_layers=3, text_num_heads=2,
               text_intermediate_size=64, image_hidden_size=32, image_num_layers=2,
               image_num_heads=2, image_intermediate_size=32, combined_hidden_size=32,
               combined_num_heads=2, text_biattention_id=(1, 2), image_biattention_id=(0, 1),
               pooled_output_dim=32)
CONFIGS = {"full": FULL, "test": TEST}


# ---------------------------------------------------------------------------------------------
# Modules (names follow allennlp so its state dicts load by identity)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, N] keep-mask (bool or 0/1) -> [B, 1, 1, N] scores offset, allennlp's apply_mask."""
    keep = mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.view(x.shape[0], x.shape[1], heads, x.shape[2] // heads).permute(0, 2, 1, 3)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           offset: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention over [B, H, N, D] heads, merged back to [B, N, H*D]."""
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.shape[-1])
    probs = torch.softmax(scores + offset, dim=-1)
    context = torch.matmul(probs, value).permute(0, 2, 1, 3)
    return context.reshape(context.shape[0], context.shape[1], -1)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return attend(split_heads(self.query(x), self.heads), split_heads(self.key(x), self.heads),
                      split_heads(self.value(x), self.heads), offset)


class OutputLayer(nn.Module):
    """LayerNorm(dense(x) + residual)."""

    def __init__(self, input_size: int, hidden_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.dense(x) + residual)


class ActivationLayer(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # bert-base's hidden_act "gelu" (erf form)


class AttentionLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float):
        super().__init__()
        self.self = SelfAttention(hidden, heads)
        self.output = OutputLayer(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, offset), x)


class TransformerLayer(nn.Module):
    def __init__(self, hidden: int, intermediate: int, heads: int, eps: float):
        super().__init__()
        self.attention = AttentionLayer(hidden, heads, eps)
        self.intermediate = ActivationLayer(hidden, intermediate)
        self.output = OutputLayer(intermediate, hidden, eps)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        attended = self.attention(x, offset)
        return self.output(self.intermediate(attended), attended)


class BiModalAttention(nn.Module):
    """Each stream's queries attend over the other stream's keys and values."""

    def __init__(self, hidden1: int, hidden2: int, combined: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query1, self.key1, self.value1 = (nn.Linear(hidden1, combined) for _ in range(3))
        self.query2, self.key2, self.value2 = (nn.Linear(hidden2, combined) for _ in range(3))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, offset1: torch.Tensor,
                offset2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.heads
        # stream 2 conditioned on stream 1: [B, N2, combined]; then stream 1 on stream 2
        context1 = attend(split_heads(self.query2(x2), h), split_heads(self.key1(x1), h),
                          split_heads(self.value1(x1), h), offset1)
        context2 = attend(split_heads(self.query1(x1), h), split_heads(self.key2(x2), h),
                          split_heads(self.value2(x2), h), offset2)
        return context1, context2


class BiModalOutput(nn.Module):
    def __init__(self, hidden1: int, hidden2: int, combined: int, eps: float):
        super().__init__()
        self.bert_output1 = OutputLayer(combined, hidden1, eps)
        self.bert_output2 = OutputLayer(combined, hidden2, eps)


class BiModalConnectionLayer(nn.Module):
    def __init__(self, cfg: VilbertConfig):
        super().__init__()
        h1, h2, eps = cfg.text_hidden_size, cfg.image_hidden_size, cfg.layer_norm_eps
        self.bimodal_attention = BiModalAttention(h1, h2, cfg.combined_hidden_size,
                                                  cfg.combined_num_heads)
        self.bimodal_output = BiModalOutput(h1, h2, cfg.combined_hidden_size, eps)
        self.intermediate1 = ActivationLayer(h1, cfg.text_intermediate_size)
        self.output1 = OutputLayer(cfg.text_intermediate_size, h1, eps)
        self.intermediate2 = ActivationLayer(h2, cfg.image_intermediate_size)
        self.output2 = OutputLayer(cfg.image_intermediate_size, h2, eps)

    def forward(self, x1: torch.Tensor, offset1: torch.Tensor, x2: torch.Tensor,
                offset2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bi1, bi2 = self.bimodal_attention(x1, x2, offset1, offset2)
        a1 = self.bimodal_output.bert_output1(bi2, x1)
        a2 = self.bimodal_output.bert_output2(bi1, x2)
        return (self.output1(self.intermediate1(a1), a1),
                self.output2(self.intermediate2(a2), a2))


class BiModalEncoder(nn.Module):
    def __init__(self, cfg: VilbertConfig):
        super().__init__()
        eps = cfg.layer_norm_eps
        self.text_ids = cfg.text_biattention_id
        self.image_ids = cfg.image_biattention_id
        self.layers1 = nn.ModuleList(
            TransformerLayer(cfg.text_hidden_size, cfg.text_intermediate_size,
                             cfg.text_num_heads, eps)
            for _ in range(cfg.text_num_layers))
        self.layers2 = nn.ModuleList(
            TransformerLayer(cfg.image_hidden_size, cfg.image_intermediate_size,
                             cfg.image_num_heads, eps)
            for _ in range(cfg.image_num_layers))
        self.c_layer = nn.ModuleList(BiModalConnectionLayer(cfg) for _ in self.image_ids)

    def forward(self, text: torch.Tensor, image: torch.Tensor, offset1: torch.Tensor,
                offset2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start1 = start2 = 0
        after1, after2 = [], []
        for connection, end1, end2 in zip(self.c_layer, self.text_ids, self.image_ids):
            for layer in self.layers1[start1:end1]:
                text = layer(text, offset1)
            for layer in self.layers2[start2:end2]:
                image = layer(image, offset2)
            text, image = connection(text, offset1, image, offset2)
            after1.append(text)
            after2.append(image)
            start1, start2 = end1, end2
        # allennlp runs the remaining layers too, but returns the co-attention outputs only
        for layer in self.layers2[start2:]:
            image = layer(image, offset2)
        for layer in self.layers1[start1:]:
            text = layer(text, offset1)
        return torch.stack(after1, dim=-1)[..., -1], torch.stack(after2, dim=-1)[..., -1]


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: VilbertConfig):
        super().__init__()
        h = cfg.text_hidden_size
        self.embeddings = nn.ModuleDict({
            "word_embeddings": nn.Embedding(cfg.vocab_size, h, padding_idx=cfg.pad_token_id),
            "position_embeddings": nn.Embedding(cfg.max_position_embeddings, h),
            "token_type_embeddings": nn.Embedding(cfg.type_vocab_size, h),
        })
        self.layer_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)

    def forward(self, token_ids: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        e = self.embeddings
        summed = (e["word_embeddings"](token_ids) + e["position_embeddings"](positions)[None]
                  + e["token_type_embeddings"](type_ids))
        return self.layer_norm(summed)


class ImageEmbeddings(nn.Module):
    def __init__(self, cfg: VilbertConfig):
        super().__init__()
        h = cfg.image_hidden_size
        self.embeddings = nn.ModuleDict({
            "image_embeddings": nn.Linear(cfg.image_feature_dim, h),
            "location_embeddings": nn.Linear(4, h, bias=False),
        })
        self.layer_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)

    def forward(self, features: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        summed = e["image_embeddings"](features) + e["location_embeddings"](coordinates)
        return self.layer_norm(summed)


class Pooler(nn.Module):
    """allennlp's TransformerPooler: ReLU(dense(first position)) (not BERT's tanh)."""

    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.dense = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.dense(x[:, 0]))


class VilbertBackbone(nn.Module):
    def __init__(self, cfg: VilbertConfig):
        super().__init__()
        self.fusion_method = cfg.fusion_method
        self.text_embeddings = TextEmbeddings(cfg)
        self.image_embeddings = ImageEmbeddings(cfg)
        self.encoder = BiModalEncoder(cfg)
        self.t_pooler = Pooler(cfg.text_hidden_size, cfg.pooled_output_dim)
        self.v_pooler = Pooler(cfg.image_hidden_size, cfg.pooled_output_dim)

    def forward(self, box_features: torch.Tensor, box_coordinates: torch.Tensor,
                box_mask: torch.Tensor, token_ids: torch.Tensor, mask: torch.Tensor,
                type_ids: torch.Tensor) -> torch.Tensor:
        text = self.text_embeddings(token_ids, type_ids)
        image = self.image_embeddings(box_features, box_coordinates)
        text, image = self.encoder(text, image, additive_mask(mask, text.dtype),
                                   additive_mask(box_mask, image.dtype))
        pooled_t, pooled_v = self.t_pooler(text), self.v_pooler(image)
        return pooled_t * pooled_v if self.fusion_method == "mul" else pooled_t + pooled_v


class VilbertVqa(nn.Module):
    """(box_features, box_coordinates, box_mask, token_ids, mask, type_ids) -> logits, probs."""

    def __init__(self, cfg: VilbertConfig):
        super().__init__()
        self.config = cfg
        self.backbone = VilbertBackbone(cfg)
        self.classifier = nn.Linear(cfg.pooled_output_dim, cfg.num_labels)

    def forward(self, box_features: torch.Tensor, box_coordinates: torch.Tensor,
                box_mask: torch.Tensor, token_ids: torch.Tensor, mask: torch.Tensor,
                type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.backbone(box_features, box_coordinates, box_mask, token_ids, mask, type_ids)
        logits = self.classifier(pooled)
        return logits, torch.sigmoid(logits)


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """Random weights that keep activations at unit scale, so outputs spread as a trained model's.

    Linear layers get LeCun normal weights (std 1/sqrt(fan_in)), so attention scores have unit
    variance (not BERT's 0.02, which leaves attention uniform and the logits near 1e-3 and alike
    for every sample); embeddings get normal(0, 0.02) as in BERT; biases and LayerNorms small
    random values around 0 and 1 (random_init.py says why).
    """
    lecun_linears(model)
    jittered_norms(model)
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, EMBEDDING_STD)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()


def allennlp_name(name: str) -> str | None:
    """A checkpoint key in allennlp (or HF/TF BERT) spelling -> this model's key; None drops it."""
    if name.startswith("module."):
        name = name[len("module."):]
    if name.endswith("position_ids"):
        return None
    name = name.replace(".LayerNorm.", ".layer_norm.")
    if ".layer_norm." in name:
        name = name.replace(".layer_norm.gamma", ".layer_norm.weight")
        name = name.replace(".layer_norm.beta", ".layer_norm.bias")
    return name


# ---------------------------------------------------------------------------------------------
# Inputs


def make_generator(cfg: VilbertConfig):
    def generate(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        boxes = _regions(rng, batch, cfg.num_boxes, cfg.image_feature_dim)
        token_ids, mask = gen.sentences(
            rng, batch, cfg.num_tokens, start_id=cfg.cls_token_id, end_id=cfg.sep_token_id,
            pad_id=cfg.pad_token_id, word_low=cfg.first_word_id, word_high=cfg.vocab_size,
            min_words=3, max_words=20)
        type_ids = np.zeros_like(token_ids)  # one segment: the question
        return {**boxes, "token_ids": token_ids, "mask": mask, "type_ids": type_ids}
    return generate


def _regions(rng: np.random.Generator, batch: int, n: int, dim: int) -> dict[str, np.ndarray]:
    """Detector-style regions: region 0 is the whole image (mean feature, box [0,0,1,1]).

    About half the samples use all n regions; the rest have 10%..99% of them, padded with
    zero features and boxes and a False mask. Features are non-negative (post-ReLU pooled
    CNN features) with a per-region scale; boxes have 0 <= x1 < x2 <= 1, 0 <= y1 < y2 <= 1.
    """
    counts = np.where(rng.random(batch) < 0.5, n, rng.integers(max(2, n // 10), n, size=batch))
    valid = np.arange(n)[None, :] < counts[:, None]
    scale = rng.uniform(0.5, 2.0, size=(batch, n, 1))
    features = np.maximum(rng.standard_normal((batch, n, dim)), 0.0) * scale
    x1, y1 = rng.uniform(0.0, 0.9, size=(2, batch, n))
    x2 = x1 + rng.uniform(0.05, 1.0, size=(batch, n)) * (1.0 - x1)
    y2 = y1 + rng.uniform(0.05, 1.0, size=(batch, n)) * (1.0 - y1)
    coords = np.stack([x1, y1, x2, y2], axis=-1)
    features = np.where(valid[..., None], features, 0.0)
    features[:, 0] = features[:, 1:].sum(axis=1) / np.maximum(counts - 1, 1)[:, None]
    coords[:, 0] = (0.0, 0.0, 1.0, 1.0)
    coords = np.where(valid[..., None], coords, 0.0)
    return {"box_features": features.astype(np.float32),
            "box_coordinates": coords.astype(np.float32), "box_mask": valid}


# ---------------------------------------------------------------------------------------------
# Example entry points (see registry.py)


def interface(size: str) -> tuple[list[InputSpec], list[TensorSig]]:
    cfg = CONFIGS[size]
    n, t = cfg.num_boxes, cfg.num_tokens
    inputs = [
        InputSpec("box_features", (BATCH, n, cfg.image_feature_dim), "float32", "uniform", 0, 3),
        InputSpec("box_coordinates", (BATCH, n, 4), "float32", "uniform", 0.0, 1.0),
        InputSpec("box_mask", (BATCH, n), "bool", "bool"),
        InputSpec("token_ids", (BATCH, t), "int64", "int", cfg.first_word_id, cfg.vocab_size),
        InputSpec("mask", (BATCH, t), "bool", "bool"),
        InputSpec("type_ids", (BATCH, t), "int64", "int", 0, 1),
    ]
    outputs = [TensorSig(name, "float32", (BATCH, cfg.num_labels)) for name in ("logits", "probs")]
    return inputs, outputs


def parameters(size: str) -> int:
    return meta_parameters(lambda: VilbertVqa(CONFIGS[size]))


def build(size: str, weights: Path | None) -> Built:
    cfg = CONFIGS[size]
    with seeded(SEED):
        model = VilbertVqa(cfg)
        init_weights(model)
    if weights is None:
        origin = f"random (seed {SEED})"
    else:
        path = wts.resolve(weights, NAME)
        wts.load_into(model, wts.read_state_dict(path, NAME), source=path, example=NAME,
                      rename=allennlp_name)
        origin = str(path)
    inputs, outputs = interface(size)
    return Built(model.eval(), inputs, outputs, make_generator(cfg), origin, asdict(cfg))
