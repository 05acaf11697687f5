"""Model-level alignment: `layer_alignment` vs scoring every layer pair from scratch.

    uv run python experiments/bench/bench_alignment.py                     # 1024 x (12 x 17 layers)
    uv run python experiments/bench/bench_alignment.py --big-n 100000      # + blocked kNN at 100k x 1024
    uv run --with faiss-cpu python experiments/bench/bench_alignment.py --faiss-n 20000

The peer is the reference code's structure, written here: for each of the La x Lb layer
pairs, normalise both layers, build both N x N similarity matrices, argsort every row and
score the pair (kNN lists recomputed for every pair). Ours (`mm_eval.alignment.
layer_alignment`) computes each layer's kNN lists (or centred kernel) once and reuses them
for all its pairs. Inputs are shaped like the Platonic study (an LM with 12 layers of
width 768 vs a ViT with 17 of 1024, N = 1024 samples, clipped at q = 0.95); both get the
same clipped features, and the scores must agree to 1e-6. ``--big-n`` times mutual_knn
on two N x 1024 random feature sets with the blocked search (memory O(block x N)), and
``--faiss-n`` times the same exact search with faiss's IndexFlatIP (when installed).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from mm_eval.alignment import (
    _cycle_from_indices,
    _mutual_from_indices,
    clip_outliers,
    knn_indices,
    layer_alignment,
    unbiased_cka,
)


def peer_knn(x: torch.Tensor, topk: int) -> torch.Tensor:
    """The reference's neighbour search: full N x N, diagonal -1e8, argsort of every row."""
    sims = x @ x.T
    sims.fill_diagonal_(-1e8)
    return sims.argsort(dim=1, descending=True)[:, :topk]


def peer_scores(fa, fb, metric: str, topk: int) -> np.ndarray:
    """Every layer pair scored from scratch (both layers normalised, kNN recomputed)."""
    out = np.zeros((fa.shape[1], fb.shape[1]))
    for i in range(fa.shape[1]):
        for j in range(fb.shape[1]):
            a, b = F.normalize(fa[:, i], dim=-1), F.normalize(fb[:, j], dim=-1)
            if metric == "unbiased_cka":
                out[i, j] = unbiased_cka(a, b)
                continue
            ka, kb = peer_knn(a, topk), peer_knn(b, topk)
            score = _mutual_from_indices if metric == "mutual_knn" else _cycle_from_indices
            out[i, j] = score(ka, kb)
    return out


def features(n: int, layers: int, width: int, seed: int) -> torch.Tensor:
    """Layers that share a latent (so scores are not all at chance), then clipped."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 32, generator=g)
    feats = torch.stack([z @ torch.randn(32, width, generator=g) * (1 + k / layers)
                         + 3 * torch.randn(n, width, generator=g) for k in range(layers)], 1)  # fmt: skip
    return clip_outliers(feats, 0.95)


def bench_model_level(args) -> None:
    fa = features(args.n, 12, 768, seed=0)
    fb = features(args.n, 17, 1024, seed=1)
    print(f"N = {args.n}, A: 12 layers x 768, B: 17 layers x 1024, topk {args.topk}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'metric':14s} {'pairwise s':>11s} {'ours s':>8s} {'speed-up':>9s} {'max |diff|':>11s}")
    for metric in args.metrics:
        started = time.perf_counter()
        want = peer_scores(fa, fb, metric, args.topk)
        peer_s = time.perf_counter() - started
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            got = layer_alignment(fa, fb, metric, topk=args.topk, q=1.0).scores
            times.append(time.perf_counter() - started)
        ours_s = min(times)
        diff = float(np.abs(got - want).max())
        print(f"{metric:14s} {peer_s:11.2f} {ours_s:8.3f} {peer_s / ours_s:8.1f}x {diff:11.2e}")


def bench_big(n: int, dim: int, topk: int, block: int) -> None:
    g = torch.Generator().manual_seed(2)
    a = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    b = F.normalize(a + torch.randn(n, dim, generator=g), dim=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    ia = knn_indices(a, topk, block_size=block)
    ib = knn_indices(b, topk, block_size=block)
    score = _mutual_from_indices(ia, ib)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    full_gib = n * n * 4 / 2**30
    print(f"blocked mutual_knn, N = {n} x {dim}, topk {topk}, block {block}: {elapsed:.1f} s, "
          f"score {score:.4f}; peak RSS {peak:.0f} MiB (+{peak - before:.0f} MiB; the full "
          f"N x N float32 similarity would be {full_gib:.1f} GiB)")  # fmt: skip


def bench_faiss(n: int, dim: int, topk: int, block: int) -> None:
    try:
        import faiss
    except ImportError:
        print("faiss not installed: uv run --with faiss-cpu python experiments/bench/...")
        return
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    started = time.perf_counter()
    ours = knn_indices(x, topk, block_size=block)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    index = faiss.IndexFlatIP(dim)
    index.add(x.numpy())
    _, found = index.search(x.numpy(), topk + 1)  # itself first
    faiss_s = time.perf_counter() - started
    theirs = torch.from_numpy(found[:, 1:])
    agree = (ours == theirs).float().mean().item()
    print(f"exact kNN, N = {n} x {dim}, topk {topk}: torch blocked {ours_s:.1f} s, faiss "
          f"IndexFlatIP {faiss_s:.1f} s (torch / faiss = {ours_s / faiss_s:.2f}); same "
          f"neighbour at the same rank for {agree:.4%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--metrics", nargs="+", default=["mutual_knn", "cycle_knn",
                                                         "unbiased_cka"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--big-n", type=int, default=0, help="also time blocked kNN at this N")
    parser.add_argument("--big-dim", type=int, default=1024)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--faiss-n", type=int, default=0, help="also compare with faiss at this N")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    bench_model_level(args)
    if args.big_n:
        bench_big(args.big_n, args.big_dim, args.topk, args.block)
    if args.faiss_n:
        bench_faiss(args.faiss_n, args.big_dim, args.topk, args.block)


if __name__ == "__main__":
    main()
