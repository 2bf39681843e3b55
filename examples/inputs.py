"""Realistic inputs for the examples: images with spatial structure, tokenised sentences.

Random weights are tolerable for deployment checks only when the inputs look like real data:
token ids from the vocabulary in [CLS] ... [SEP] <pad> layout with a matching mask, images
whose pixels are correlated over space (as photographs are) rather than white noise. These
feeds also serve as calibration data, which must never be constant.
"""

from __future__ import annotations

import numpy as np

COARSE = 8  # the image's low-frequency grid before bilinear upsampling
NOISE = 0.1  # fine-grain noise on top of the smooth image


def images(rng: np.random.Generator, batch: int, size: int, channels: int = 3) -> np.ndarray:
    """float32 [batch, channels, size, size] pixels in [0, 1]: a smooth random field plus grain.

    Each channel is a COARSE x COARSE uniform [0, 1] grid upsampled bilinearly, plus uniform
    noise of amplitude NOISE, clipped to [0, 1].
    """
    coarse = rng.uniform(0.0, 1.0, size=(batch, channels, COARSE, COARSE))
    up = _bilinear(COARSE, size)
    smooth = np.einsum("hi,bcij,wj->bchw", up, coarse, up)
    grain = rng.uniform(-NOISE, NOISE, size=smooth.shape)
    return np.clip(smooth + grain, 0.0, 1.0).astype(np.float32)


def normalize(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(pixels - mean) / std per channel (axis 1), as float32."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((pixels - m) / s).astype(np.float32)


def _bilinear(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of bilinear interpolation weights (align_corners=False)."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    centres = np.clip(centres, 0, n_in - 1)
    lo = np.floor(centres).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    matrix = np.zeros((n_out, n_in))
    matrix[np.arange(n_out), lo] += 1.0 - frac
    matrix[np.arange(n_out), hi] += frac
    return matrix


def sentences(rng: np.random.Generator, batch: int, length: int, *, start_id: int, end_id: int,
              pad_id: int, word_low: int, word_high: int, min_words: int,
              max_words: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 token ids [batch, length] laid out `start w1 .. wn end pad ..`, and the bool mask.

    n is uniform in [min_words, max_words] (capped to fit), words uniform in
    [word_low, word_high); the mask is True on start, words and end, False on padding.
    """
    max_words = min(max_words, length - 2)
    counts = rng.integers(min_words, max_words + 1, size=batch)
    ids = np.full((batch, length), pad_id, dtype=np.int64)
    ids[:, 0] = start_id
    positions = np.arange(length)
    words = rng.integers(word_low, word_high, size=(batch, length))
    in_sentence = (positions[None, :] >= 1) & (positions[None, :] <= counts[:, None])
    ids = np.where(in_sentence, words, ids)
    ids[np.arange(batch), counts + 1] = end_id
    mask = positions[None, :] <= (counts + 1)[:, None]
    return ids, mask
