"""Two modalities that share some bits and own others, with a label that needs a chosen mix.

Bits: shared ``x_c`` in {0,1}^8, unique ``x_u1``, ``x_u2`` in {0,1}^4, uniform and
independent. Modality 1 sees ``X1 = [x_c, x_u1]``, modality 2 ``X2 = [x_c, x_u2]`` (12 each).
The label reads ``z``: 8 bits of which ``r = 8 - U`` come from ``x_c`` and the ``U`` others
from the unique bits (``floor(U/2)`` from ``x_u1``, the rest from ``x_u2``), so ``U`` is the
label's *uniqueness*: how much of what predicts it one modality cannot see.
``p(y | x) = softmax(z W / T)`` over 4 classes, ``W`` (8 x 4) Uniform(0, 1) with unit rows,
``T = 0.05``, then rebalanced on the exact grid of all 2^16 inputs (``p(y|x) <- p(y|x) p*(y) /
p(y)``, renormalised, until the marginal is uniform to ``atol`` or ``max_iter`` rounds).

*Heterogeneity*: modality 2 passes through a random, frozen MLP ``Linear(12, 12)`` then
``D_phi`` blocks of ``[tanh, Linear(12, 12)]`` (`heterogeneity_map`). Samples are drawn
i.i.d., split 70/15/15 stratified by label, and z-scored with the training statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "LabelModel",
    "SyntheticSplits",
    "all_bit_patterns",
    "heterogeneity_map",
    "label_model",
    "make_synthetic",
]

N_SHARED, N_UNIQUE, NUM_CLASSES = 8, 4, 4
SPLITS = ("train", "val", "test")


def all_bit_patterns(n_bits: int = N_SHARED + 2 * N_UNIQUE) -> np.ndarray:
    """Every bit vector of length n_bits, [2^n_bits, n_bits] (row g holds the bits of g)."""
    if not 1 <= n_bits <= 24:
        raise ValueError(f"n_bits must be in [1, 24], got {n_bits}")
    codes = np.arange(2**n_bits, dtype=np.int64)[:, None]
    return ((codes >> np.arange(n_bits - 1, -1, -1)) & 1).astype(np.int8)


@dataclass
class LabelModel:
    """Which bits the label reads and p(y | x) on the whole input grid."""

    uniqueness: int
    columns: np.ndarray  # the 8 columns of [x_c, x_u1, x_u2] that form z
    weights: np.ndarray  # W, [8, num_classes], unit rows
    probs: np.ndarray  # p(y | x) for every grid row, [2^16, num_classes], balanced
    balance_rounds: int  # rebalancing rounds used

    def sample(self, bits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Labels for bit rows [n, 16], one draw each from p(y | x)."""
        index = bits.astype(np.int64) @ (1 << np.arange(bits.shape[1] - 1, -1, -1))
        p = self.probs[index]
        u = rng.random(len(p))[:, None]
        return np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), p.shape[1] - 1)


def label_model(
    uniqueness: int,
    seed: int,
    temperature: float = 0.05,
    num_classes: int = NUM_CLASSES,
    atol: float = 0.01,
    max_iter: int = 100,
) -> LabelModel:
    """The label of uniqueness U: r = 8 - U shared bits and U unique bits, chosen at random."""
    if isinstance(uniqueness, bool) or not isinstance(uniqueness, int):
        raise ValueError(f"uniqueness must be an int, got {uniqueness!r}")
    if not 0 <= uniqueness <= min(N_SHARED, 2 * N_UNIQUE):
        raise ValueError(f"uniqueness must be in [0, {N_SHARED}], got {uniqueness}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rng = np.random.default_rng(seed)
    u1 = uniqueness // 2
    u2 = uniqueness - u1
    shared = rng.choice(N_SHARED, N_SHARED - uniqueness, replace=False)
    unique1 = N_SHARED + rng.choice(N_UNIQUE, u1, replace=False)
    unique2 = N_SHARED + N_UNIQUE + rng.choice(N_UNIQUE, u2, replace=False)
    columns = np.sort(np.concatenate([shared, unique1, unique2]))
    weights = rng.uniform(0.0, 1.0, (N_SHARED, num_classes))
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    z = all_bit_patterns()[:, columns].astype(np.float64)
    logits = z @ weights / temperature
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    target = 1.0 / num_classes
    rounds = 0
    for rounds in range(max_iter + 1):
        marginal = probs.mean(axis=0)  # inputs are uniform on the grid
        if np.abs(marginal - target).max() <= atol or rounds == max_iter:
            break
        probs = probs * (target / marginal)
        probs /= probs.sum(axis=1, keepdims=True)
    return LabelModel(uniqueness, columns, weights, probs, rounds)


def heterogeneity_map(depth: int, seed: int, width: int = N_SHARED + N_UNIQUE) -> nn.Module:
    """The frozen random MLP applied to modality 2: Linear, then depth x [tanh, Linear]."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"heterogeneity depth (D_phi) must be an int >= 0, got {depth!r}")
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(width, width)]
    for _ in range(depth):
        layers += [nn.Tanh(), nn.Linear(width, width)]
    net = nn.Sequential(*layers)
    with torch.no_grad():  # default Linear init, drawn from our own generator
        for module in net:
            if isinstance(module, nn.Linear):
                bound = 1.0 / width**0.5
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.uniform_(-bound, bound, generator=generator)
    return net.requires_grad_(False).eval()


@dataclass
class SyntheticSplits:
    """Per split: ``x1`` [n, 12], ``x2`` {D_phi: [n, 12]}, ``y`` {U: [n]} (float32 / int64)."""

    x1: dict[str, torch.Tensor]
    x2: dict[str, dict[int, torch.Tensor]]
    y: dict[str, dict[int, torch.Tensor]]
    labels: dict[int, LabelModel]


def _stratified_split(y: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """70/15/15 index split with each class's share kept in every split."""
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a, b = round(0.70 * len(idx)), round(0.85 * len(idx))
        for name, chunk in zip(SPLITS, (idx[:a], idx[a:b], idx[b:])):
            parts[name].append(chunk)
    return {s: rng.permutation(np.concatenate(parts[s])) for s in SPLITS}


def _zscore(split: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    mean, std = split["train"].mean(axis=0), split["train"].std(axis=0) + 1e-8
    return {s: torch.from_numpy(((v - mean) / std).astype(np.float32)) for s, v in split.items()}


def make_synthetic(
    n_samples: int,
    uniqueness: list[int],
    dphi: list[int],
    seed: int,
    temperature: float = 0.05,
) -> SyntheticSplits:
    """Draw ``n_samples`` inputs once; a label per U and a modality-2 view per D_phi.

    One stratified split (by the label of the first U) serves every U, so all labels and
    views of a sample land in the same split; each view is z-scored on its training rows.
    """
    if n_samples < 20:
        raise ValueError(f"n_samples must be >= 20, got {n_samples}")
    if not uniqueness or not dphi:
        raise ValueError("uniqueness and dphi must each list at least one value")
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (n_samples, N_SHARED + 2 * N_UNIQUE)).astype(np.int8)
    labels = {u: label_model(u, seed * 1000 + 17 * u + 1, temperature) for u in uniqueness}
    y_all = {u: labels[u].sample(bits, rng) for u in uniqueness}
    index = _stratified_split(y_all[uniqueness[0]], rng)
    x1_all = bits[:, : N_SHARED + N_UNIQUE].astype(np.float32)
    x2_raw = np.concatenate([bits[:, :N_SHARED], bits[:, N_SHARED + N_UNIQUE :]], axis=1)
    x1 = _zscore({s: x1_all[i] for s, i in index.items()})
    x2: dict[str, dict[int, torch.Tensor]] = {s: {} for s in SPLITS}
    for d in dphi:
        with torch.no_grad():
            view = heterogeneity_map(d, seed * 1000 + d)(
                torch.from_numpy(x2_raw.astype(np.float32))
            )
        for s, v in _zscore({s: view.numpy()[i] for s, i in index.items()}).items():
            x2[s][d] = v
    y = {s: {u: torch.from_numpy(y_all[u][i]) for u in uniqueness} for s, i in index.items()}
    return SyntheticSplits(x1, x2, y, labels)
