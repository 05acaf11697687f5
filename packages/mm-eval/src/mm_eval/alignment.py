"""Representation alignment: how similarly two encoders arrange the same N samples.

Every metric takes two feature matrices ``A`` (N x Da) and ``B`` (N x Db) whose row i
describes the same sample, and returns one float (higher = more aligned):

- kNN metrics compare each sample's k nearest neighbours (inner product of the rows, the
  sample itself excluded) in the two spaces: `mutual_knn` (mean overlap / k), `cycle_knn`
  (is i among the A-neighbours of its B-neighbours), `lcs_knn` (longest common
  subsequence of the two ordered lists), `edit_distance_knn` (1 - Levenshtein / k);
- kernel metrics compare the N x N Gram matrices: `cka` (biased HSIC, linear or RBF
  kernel), `unbiased_cka` (the unbiased HSIC estimator), `cknna` (unbiased HSIC restricted
  to the pairs that are mutual top-k neighbours);
- `svcca`: mean canonical correlation of the top singular directions of each side.

`alignment_score(metric, A, B)` scores one pair (rows are L2-normalised first, as the
metrics are defined on unit vectors). `layer_alignment(feats_a, feats_b, metric)` scores
every pair of layers of two models (N x L x D features), after outlier clipping and
per-layer normalisation, and keeps the best pair; each layer's kNN lists (or centred
kernel) are computed once and reused for all its pairs, and kNN search runs in row blocks
so N x N never has to fit in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "KERNEL_METRICS",
    "KNN_METRICS",
    "METRICS",
    "LayerAlignment",
    "alignment_score",
    "cka",
    "cknna",
    "clip_outliers",
    "cycle_knn",
    "edit_distance_knn",
    "hsic_biased",
    "hsic_unbiased",
    "knn_indices",
    "layer_alignment",
    "lcs_knn",
    "mutual_knn",
    "prepare_layers",
    "svcca",
    "unbiased_cka",
]

KNN_METRICS = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn")
KERNEL_METRICS = ("cka", "unbiased_cka", "cknna")
METRICS = (*KNN_METRICS, *KERNEL_METRICS, "svcca")
SELF_SIMILARITY = -1e8  # the diagonal's value when neighbours are searched: never chosen


# ------------------------------------------------------------------------------- checks


def _check_features(name: str, x: torch.Tensor, ndim: int = 2) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        shape = "(N, D)" if ndim == 2 else "(N, layers, D)"
        raise ValueError(f"{name} must be {shape}, got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=tuple(range(1, x.ndim))).sum())
        raise ValueError(f"{name} has non-finite values (NaN or inf) in {bad} of {len(x)} samples")


def _check_pair(a: torch.Tensor, b: torch.Tensor, ndim: int = 2) -> None:
    _check_features("A", a, ndim)
    _check_features("B", b, ndim)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"A and B must hold the same samples: A has {a.shape[0]} rows, B has {b.shape[0]}"
        )


def _check_topk(topk: int, n: int) -> int:
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    if topk >= n:
        raise ValueError(f"topk {topk} must be < N = {n} (a sample is not its own neighbour)")
    return topk


# ---------------------------------------------------------------------------------- kNN


def knn_indices(feats: torch.Tensor, topk: int, block_size: int = 4096) -> torch.Tensor:
    """Indices [N, topk] of each row's nearest rows by inner product, best first, self excluded.

    Rows are compared as given (normalise them for cosine). The N x N similarity is formed
    ``block_size`` rows at a time, so memory is O(block_size x N).
    """
    _check_features("feats", feats)
    n = feats.shape[0]
    _check_topk(topk, n)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    out = torch.empty(n, topk, dtype=torch.long, device=feats.device)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        sims = feats[start:stop] @ feats.T
        rows = torch.arange(stop - start, device=feats.device)
        sims[rows, rows + start] = SELF_SIMILARITY
        out[start:stop] = sims.topk(topk, dim=1).indices
    return out


def _row_blocks(n: int, cost_per_row: int, budget: int = 1 << 24):
    step = max(1, budget // max(cost_per_row, 1))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def _mutual_from_indices(ia: torch.Tensor, ib: torch.Tensor) -> float:
    n, k = ia.shape
    total = 0
    for rows in _row_blocks(n, n):  # a row block of A's neighbour mask, read at B's lists
        mask = torch.zeros(rows.stop - rows.start, n, dtype=torch.bool, device=ia.device)
        mask.scatter_(1, ia[rows], True)
        total += int(mask.gather(1, ib[rows]).sum())
    return total / (n * k)


def _cycle_from_indices(ia: torch.Tensor, ib: torch.Tensor) -> float:
    k = ia.shape[1]
    hits = 0
    for rows in _row_blocks(len(ia), k * k):
        back = ia[ib[rows]]  # [rows, k, k]: A-neighbours of each B-neighbour of i
        ids = torch.arange(rows.start, rows.stop, device=ia.device).view(-1, 1, 1)
        hits += int((back == ids).flatten(1).any(dim=1).sum())
    return hits / len(ia)


def _lcs_from_indices(ia: torch.Tensor, ib: torch.Tensor, normalize: bool) -> float:
    from rapidfuzz.distance import LCSseq

    a, b = ia.cpu().tolist(), ib.cpu().tolist()
    mean = sum(LCSseq.similarity(x, y) for x, y in zip(a, b)) / len(a)
    return mean / ia.shape[1] if normalize else mean


def _edit_from_indices(ia: torch.Tensor, ib: torch.Tensor) -> float:
    from rapidfuzz.distance import Levenshtein

    a, b = ia.cpu().tolist(), ib.cpu().tolist()
    mean = sum(Levenshtein.distance(x, y) for x, y in zip(a, b)) / len(a)
    return 1.0 - mean / ia.shape[1]


def mutual_knn(a: torch.Tensor, b: torch.Tensor, topk: int = 10, block_size: int = 4096) -> float:
    """Mean over samples of |kNN_A(i) & kNN_B(i)| / topk, in [0, 1]."""
    return _score("mutual_knn", a, b, {"topk": topk, "block_size": block_size})


def cycle_knn(a: torch.Tensor, b: torch.Tensor, topk: int = 10, block_size: int = 4096) -> float:
    """Fraction of samples i found among the A-neighbours of some B-neighbour of i."""
    return _score("cycle_knn", a, b, {"topk": topk, "block_size": block_size})


def lcs_knn(
    a: torch.Tensor,
    b: torch.Tensor,
    topk: int = 10,
    normalize: bool = False,
    block_size: int = 4096,
) -> float:
    """Mean longest common subsequence of the ordered kNN lists (raw, or / topk)."""
    opts = {"topk": topk, "block_size": block_size, "normalize_lcs": normalize}
    return _score("lcs_knn", a, b, opts)


def edit_distance_knn(
    a: torch.Tensor, b: torch.Tensor, topk: int = 10, block_size: int = 4096
) -> float:
    """1 - mean Levenshtein distance between the ordered kNN lists / topk."""
    return _score("edit_distance_knn", a, b, {"topk": topk, "block_size": block_size})


# ------------------------------------------------------------------------------ kernels


def _kernel(x: torch.Tensor, kernel: str, sigma: float) -> torch.Tensor:
    x = x.double()
    if kernel == "linear":
        return x @ x.T
    if kernel == "rbf":
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0 for the rbf kernel, got {sigma}")
        return torch.exp(-torch.cdist(x, x).square() / (2 * sigma**2))
    raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")


def _center(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 1/n."""
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def hsic_biased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """tr(K H L H), H = I - 1/n (unnormalised, as in the reference CKA)."""
    return (_center(k) * l.T).sum()


def _zero_diagonal(k: torch.Tensor) -> torch.Tensor:
    return k - torch.diag_embed(torch.diagonal(k, dim1=-2, dim2=-1))


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """The unbiased HSIC estimator (Song et al. 2012) of two n x n kernels, n >= 4.

    With K~, L~ the kernels with zeroed diagonals:
    [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2 1'K~L~1 / (n-2)] / (n(n-3)). Written in the
    trace form, so it also holds for the non-symmetric masked kernels of `cknna`.
    """
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 samples, got {n}")
    kt, lt = _zero_diagonal(k), _zero_diagonal(l)
    value = (
        (kt * lt.T).sum()
        + kt.sum() * lt.sum() / ((n - 1) * (n - 2))
        - 2 * (kt.sum(dim=0) * lt.sum(dim=1)).sum() / (n - 2)
    )
    return value / (n * (n - 3))


def _cka_ratio(kl, kk, ll, eps: float, clip_hsic: bool) -> float:
    kl, kk, ll = float(kl), float(kk), float(ll)
    if clip_hsic:  # HSIC estimates below 0 read as 0; a zero denominator gives 0
        kl, kk, ll = max(kl, 0.0), max(kk, 0.0), max(ll, 0.0)
        denominator = math.sqrt(kk * ll)
        return kl / denominator if denominator > 0 else 0.0
    return kl / (math.sqrt(kk * ll) + eps)


def cka(
    a: torch.Tensor,
    b: torch.Tensor,
    kernel: str = "linear",
    sigma: float = 1.0,
    unbiased: bool = False,
    eps: float = 1e-6,
    clip_hsic: bool = False,
) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) (+ eps), K and L the kernels of A and B.

    ``clip_hsic=True`` reads negative HSIC estimates as 0 and drops ``eps`` (0 for a zero
    denominator), which keeps the unbiased estimate in [0, 1] on small samples.
    """
    opts = {"kernel": kernel, "sigma": sigma, "eps": eps, "clip_hsic": clip_hsic}
    return _score("unbiased_cka" if unbiased else "cka", a, b, opts)


def unbiased_cka(a: torch.Tensor, b: torch.Tensor, **kwargs) -> float:
    """`cka` with the unbiased HSIC estimator."""
    return cka(a, b, unbiased=True, **kwargs)


def _topk_mask(k: torch.Tensor, topk: int) -> torch.Tensor:
    """1 where column j is among the topk largest of row i (diagonal excluded)."""
    masked = k.clone()
    masked.fill_diagonal_(float("-inf"))
    index = masked.topk(topk, dim=1).indices
    return torch.zeros_like(k).scatter_(1, index, 1.0)


def cknna(a: torch.Tensor, b: torch.Tensor, topk: int | None = None, eps: float = 1e-6) -> float:
    """CKA restricted to mutual nearest neighbours (linear kernels, unbiased HSIC).

    The mask keeps pair (i, j) when j is among the ``topk`` neighbours of i under both
    kernels; each self-similarity term uses its own kernel's mask. ``topk=None`` takes
    every other sample (N - 1), where the score is unbiased CKA.
    """
    _check_pair(a, b)
    n = a.shape[0]
    topk = n - 1 if topk is None else topk
    _check_topk(topk, n)
    return _score("cknna", a, b, {"topk": topk, "eps": eps})


# ------------------------------------------------------------------------------- SVCCA


def _svcca_basis(x: torch.Tensor, cca_dim: int) -> np.ndarray:
    x = x.double()
    x = (x - x.mean(dim=0)) / (x.std(dim=0) + 1e-8)
    u = torch.linalg.svd(x, full_matrices=False).U
    if u.shape[1] < cca_dim:
        raise ValueError(
            f"svcca needs cca_dim {cca_dim} <= min(N, D); the features have {u.shape[1]}"
        )
    return u[:, :cca_dim].cpu().numpy()


def _svcca_from_bases(ua: np.ndarray, ub: np.ndarray) -> float:
    from sklearn.cross_decomposition import CCA

    cca = CCA(n_components=ua.shape[1], max_iter=1000)
    ca, cb = cca.fit(ua, ub).transform(ua, ub)
    corrs = [np.corrcoef(ca[:, i], cb[:, i])[0, 1] for i in range(ua.shape[1])]
    return float(np.mean(corrs))


def svcca(a: torch.Tensor, b: torch.Tensor, cca_dim: int = 10) -> float:
    """Standardise, keep the top ``cca_dim`` left singular vectors, mean CCA correlation."""
    return _score("svcca", a, b, {"cca_dim": cca_dim})


# ------------------------------------------------------------------------- one pair API

_FUNCTIONS = {
    "mutual_knn": mutual_knn,
    "cycle_knn": cycle_knn,
    "lcs_knn": lcs_knn,
    "edit_distance_knn": edit_distance_knn,
    "cka": cka,
    "unbiased_cka": unbiased_cka,
    "cknna": cknna,
    "svcca": svcca,
}


def _check_metric(metric: str) -> None:
    if metric not in _FUNCTIONS:
        raise ValueError(f"unknown alignment metric {metric!r}; known: {', '.join(METRICS)}")


def alignment_score(
    metric: str,
    a: torch.Tensor,
    b: torch.Tensor,
    topk: int | None = 10,
    normalize: bool = True,
    **kwargs,
) -> float:
    """Score one pair of (N, D) feature matrices with ``metric`` (a name in `METRICS`).

    Rows are L2-normalised first unless ``normalize=False``. ``topk`` is the neighbourhood
    size of the kNN metrics and of cknna (``None`` there: N - 1); other keyword arguments go
    to the metric (e.g. ``kernel="rbf"`` for cka, ``cca_dim`` for svcca).
    """
    _check_metric(metric)
    _check_pair(a, b)
    if normalize:
        a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    if metric in KNN_METRICS:
        kwargs["topk"] = 10 if topk is None else topk
    elif metric == "cknna":
        kwargs["topk"] = topk
    return _FUNCTIONS[metric](a, b, **kwargs)


# ----------------------------------------------------------------------- model-level API


def clip_outliers(feats: torch.Tensor, q: float = 0.95, precise: bool = False) -> torch.Tensor:
    """Clamp features to [-t, t], t the q-quantile of |x|.

    Default: t is the mean over samples of each sample's quantile over all its values (every
    layer at once); ``precise=True``: the exact quantile over the whole tensor. One
    threshold for every layer. ``q=1`` returns the features unchanged.
    """
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    if q == 1:
        return feats
    magnitude = feats.abs().float()
    if precise:
        flat = magnitude.flatten().sort().values
        threshold = flat[min(int(q * flat.numel()), flat.numel() - 1)]
    else:
        threshold = torch.quantile(magnitude.flatten(1), q, dim=1).mean()
    return feats.clamp(-threshold, threshold)


def prepare_layers(
    feats: torch.Tensor, q: float = 0.95, precise: bool = False, concat: bool = False
) -> list[torch.Tensor]:
    """(N, L, D) -> the L per-layer (N, D) matrices, clipped and L2-normalised per layer.

    ``concat=True`` puts first the concatenation of all layers (N, L*D), normalised, as the
    "layer" with index -1.
    """
    _check_features("feats", feats, ndim=3)
    feats = clip_outliers(feats.float(), q, precise)
    layers = [F.normalize(feats[:, i], dim=-1) for i in range(feats.shape[1])]
    if concat:
        layers.insert(0, F.normalize(feats.flatten(1), dim=-1))
    return layers


@dataclass
class LayerAlignment:
    """Scores of every layer pair; layer index -1 is the concatenation of all layers."""

    metric: str
    scores: np.ndarray  # [layers of A (+1), layers of B (+1)], rows/cols in `layers_a/_b`
    layers_a: list[int]
    layers_b: list[int]

    @property
    def best(self) -> float:
        return float(self.scores.max())

    @property
    def best_layers(self) -> tuple[int, int]:
        i, j = np.unravel_index(int(self.scores.argmax()), self.scores.shape)
        return self.layers_a[i], self.layers_b[j]


def _prepare(metric: str, x: torch.Tensor, opts: dict):
    """What ``metric`` needs from one feature matrix: computed once, reused for every pair."""
    if metric in KNN_METRICS:
        return knn_indices(x, opts["topk"], opts.get("block_size", 4096))
    if metric == "svcca":
        return _svcca_basis(x, opts.get("cca_dim", 10))
    k = _kernel(x, opts.get("kernel", "linear") if metric != "cknna" else "linear",
                opts.get("sigma", 1.0))  # fmt: skip
    if metric == "cknna":  # the kernel, its top-k mask, and its own masked self-HSIC
        mask = _topk_mask(k, opts["topk"])
        return k, mask, hsic_unbiased(mask * k, mask * k)
    if metric == "cka":
        centred = _center(k)
        return centred, (centred * centred).sum()
    kt = _zero_diagonal(k)
    return kt, kt.sum(), kt.sum(dim=1), hsic_unbiased(k, k)


def _pair_score(metric: str, x, y, n: int, opts: dict) -> float:
    if metric == "mutual_knn":
        return _mutual_from_indices(x, y)
    if metric == "cycle_knn":
        return _cycle_from_indices(x, y)
    if metric == "lcs_knn":
        return _lcs_from_indices(x, y, opts.get("normalize_lcs", False))
    if metric == "edit_distance_knn":
        return _edit_from_indices(x, y)
    if metric == "svcca":
        return _svcca_from_bases(x, y)
    eps, clip = opts.get("eps", 1e-6), opts.get("clip_hsic", False)
    if metric == "cknna":  # both masks select the pairs; each self-term used its own mask
        mask = x[1] * y[1]
        kl = hsic_unbiased(mask * x[0], mask * y[0])
        return float(kl) / (math.sqrt(float(x[2]) * float(y[2])) + eps)
    if metric == "cka":  # tr(KHLH) = <HKH, HLH> (H is idempotent)
        return _cka_ratio((x[0] * y[0]).sum(), x[1], y[1], eps, clip)
    kt, lt = x[0], y[0]  # symmetric kernels: HSIC_u from per-layer sums, one product per pair
    kl = (kt * lt).sum() + x[1] * y[1] / ((n - 1) * (n - 2)) - 2 * (x[2] * y[2]).sum() / (n - 2)
    return _cka_ratio(kl / (n * (n - 3)), x[3], y[3], eps, clip)


def _score(metric: str, a: torch.Tensor, b: torch.Tensor, opts: dict) -> float:
    """One pair scored through the same per-side preparation as `layer_alignment`."""
    _check_pair(a, b)
    return _pair_score(metric, _prepare(metric, a, opts), _prepare(metric, b, opts), len(a), opts)


def layer_alignment(
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    metric: str = "mutual_knn",
    topk: int | None = 10,
    q: float = 0.95,
    precise: bool = False,
    concat: bool = False,
    block_size: int = 4096,
    **kwargs,
) -> LayerAlignment:
    """Alignment of every layer of model A with every layer of model B; `.best` is the max.

    ``feats_a`` (N, La, Da) and ``feats_b`` (N, Lb, Db) hold the same N samples in the same
    order. Each layer is outlier-clipped (``q``, ``precise``: see `clip_outliers`; q=1 turns
    it off) and L2-normalised; ``concat`` adds the all-layers concatenation (index -1).
    Keyword arguments go to the metric (``kernel``, ``sigma``, ``eps``, ``clip_hsic``,
    ``cca_dim``, ``normalize_lcs``).
    """
    _check_metric(metric)
    _check_pair(feats_a, feats_b, ndim=3)
    n = feats_a.shape[0]
    if metric in KNN_METRICS and topk is None:
        topk = 10
    if metric == "cknna" and topk is None:
        topk = n - 1
    if metric in (*KNN_METRICS, "cknna"):
        _check_topk(topk, n)
    opts = {**kwargs, "topk": topk, "block_size": block_size}
    side_a = [_prepare(metric, x, opts) for x in prepare_layers(feats_a, q, precise, concat)]
    side_b = [_prepare(metric, x, opts) for x in prepare_layers(feats_b, q, precise, concat)]
    scores = np.array([[_pair_score(metric, x, y, n, opts) for y in side_b] for x in side_a])
    first = [-1] if concat else []
    return LayerAlignment(
        metric,
        scores,
        first + list(range(feats_a.shape[1])),
        first + list(range(feats_b.shape[1])),
    )
