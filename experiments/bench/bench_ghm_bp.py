"""Throughput of GHM sampling + exact BP (mm_data.ghm) against a per-node numpy reference.

For the Bayes CLIP risk, the conditional denoising risk and the NWP risk on the paper tree
(n_layer 4, n_child 3, vocab 10, p 0.2, K 4, sigma 1) at batch 128, this measures
samples/s of "sample a batch + compute the per-sample Bayes losses" for

* ``mm_data.ghm`` (batch-vectorised torch), median of ``--repeats`` runs; and
* the straightforward reference written below: numpy, Python loops over samples and
  nodes, one inverse-CDF draw per node, BP node by node, and for NWP one upward pass per
  predicted position followed by a walk down the ancestor path of the target leaf. It is
  timed on a few samples (its cost is linear in the number of samples).

A CLIP "sample" is one anchor index i of the batch: its K+1 text and K+1 image trees and
both loss directions. Both implementations are first run on the same batch and their
per-sample losses compared, so the benchmark doubles as a cross-check.

    uv run python experiments/bench/bench_ghm_bp.py            # torch threads = CPU count
    uv run python experiments/bench/bench_ghm_bp.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from mm_data.ghm import GHMConfig, JointGHM, bayes_losses, sample_task_batch

# The authors' reported throughput of their numpy code on a 2-core CPU; the target is 10x that
AUTHORS = {"clip": 1500.0, "dns": 4000.0, "nwp": 4000.0}
TASKS = ("clip", "dns", "nwp")


# ------------------------------------------------------------------ numpy reference


class ReferenceTree:
    """One GHM tree as per-node numpy matrices; everything node by node."""

    def __init__(self, ghm):
        cfg = ghm.config
        self.v, self.s, self.n_layer = cfg.vocab, cfg.n_child, cfg.n_layer
        self.mats = {
            (lv, k): ghm.matrix(lv, k).double().numpy()
            for lv in range(1, cfg.n_layer + 1)
            for k in range(cfg.n_child**lv)
        }
        self.cdfs = {key: np.cumsum(m, axis=1) for key, m in self.mats.items()}
        self.log_prior = np.full(self.v, -np.log(self.v))
        self.n_leaves = cfg.n_child**cfg.n_layer

    def sample(self, rng, root):
        """Leaf values of one tree with the given root, top-down, one node at a time."""
        values = {(0, 0): root}
        for lv in range(1, self.n_layer + 1):
            for k in range(self.s**lv):
                row = self.cdfs[(lv, k)][values[(lv - 1, k // self.s)]]
                values[(lv, k)] = min(
                    int(np.searchsorted(row, rng.random(), side="right")), self.v - 1
                )
        return np.array([values[(self.n_layer, k)] for k in range(self.n_leaves)])

    def upward(self, leaf_log_evidence):
        """h(node) and each node's message to its parent, from per-leaf log evidence."""
        h = {(self.n_layer, k): leaf_log_evidence[k] for k in range(self.n_leaves)}
        msg = {}
        for lv in range(self.n_layer, 0, -1):
            for k in range(self.s**lv):
                hk = h[(lv, k)]
                a = hk.max()
                msg[(lv, k)] = np.log(self.mats[(lv, k)] @ np.exp(hk - a)) + a
            for k in range(self.s ** (lv - 1)):
                h[(lv - 1, k)] = sum(msg[(lv, k * self.s + c)] for c in range(self.s))
        return h, msg

    def observed_evidence(self, leaves, upto=None):
        """Log one-hot evidence for observed leaves (those with index < upto), 0 elsewhere."""
        ev = []
        for k in range(self.n_leaves):
            e = np.zeros(self.v)
            if upto is None or k < upto:
                e = np.full(self.v, -np.inf)
                e[leaves[k]] = 0.0
            ev.append(e)
        return ev

    def root_log_posterior(self, leaves, ext=0.0):
        h, _ = self.upward(self.observed_evidence(leaves))
        x = h[(0, 0)] + self.log_prior + ext
        return x - np.logaddexp.reduce(x)

    def posterior_mean(self, noisy, sigma, ext):
        """Upward pass, downward pass, then sum_v v p(leaf = v | evidence) per leaf."""
        vals = np.arange(self.v)
        ev = [-((z - vals) ** 2) / (2 * sigma**2) for z in noisy]
        h, msg = self.upward(ev)
        out = {(0, 0): self.log_prior + ext}
        for lv in range(1, self.n_layer + 1):
            for k in range(self.s**lv):
                par = (lv - 1, k // self.s)
                pre = out[par] + h[par] - msg[(lv, k)]
                a = pre.max()
                out[(lv, k)] = np.log(np.exp(pre - a) @ self.mats[(lv, k)]) + a
        mean = np.empty(self.n_leaves)
        for k in range(self.n_leaves):
            x = out[(self.n_layer, k)] + ev[k]
            p = np.exp(x - x.max())
            mean[k] = (p / p.sum()) @ vals
        return mean

    def next_token_nll(self, text, ext):
        """Mean over positions j of -log p(x_{j+1} | x_{<=j}, ext): one upward pass of the
        prefix per position, then down the ancestor path of leaf j + 1."""
        total = 0.0
        for j in range(self.n_leaves - 1):
            h, msg = self.upward(self.observed_evidence(text, upto=j + 1))
            target = j + 1
            path = [target // self.s ** (self.n_layer - lv) for lv in range(self.n_layer + 1)]
            belief = h[(0, 0)] + self.log_prior + ext  # root, all evidence
            for lv in range(1, self.n_layer + 1):
                node = (lv, path[lv])
                pre = belief - msg[node]  # parent belief without this child's subtree
                a = pre.max()
                down = np.log(np.exp(pre - a) @ self.mats[node]) + a
                belief = down + h[node]
            logp = belief - np.logaddexp.reduce(belief)
            total -= logp[text[target]]
        return total / (self.n_leaves - 1)


def reference_losses(ref_text, ref_image, task, batch, sigma):
    """Per-sample Bayes losses by the reference, on a batch sampled by either side."""
    if task == "clip":
        b, k = batch.batch_size, batch.k
        text, image = batch.text.numpy(), batch.image.numpy()
        lt = [ref_text.root_log_posterior(t) for t in text]
        li = [ref_image.root_log_posterior(x) for x in image]
        lp = ref_text.log_prior

        def score(a, c):
            return np.logaddexp.reduce(a + c - lp)

        out = []
        for i in range(b):
            negs = [blk * b + i for blk in range(2, k + 1)]
            s1 = np.array([score(lt[t], li[i]) for t in [i, *negs]])
            s2 = np.array([score(lt[b + i], li[m]) for m in [b + i, *negs]])
            out.append(-(s1[0] - np.logaddexp.reduce(s1)) - (s2[0] - np.logaddexp.reduce(s2)))
        return np.array(out)
    if task == "dns":
        out = []
        for t, z, x in zip(
            batch.text.numpy(), batch.noisy_image.double().numpy(), batch.image.numpy()
        ):
            ext, _ = ref_text.upward(ref_text.observed_evidence(t))
            mean = ref_image.posterior_mean(z, sigma, ext[(0, 0)])
            out.append(((mean - x) ** 2).sum())
        return np.array(out)
    out = []
    for t, x in zip(batch.text.numpy(), batch.image.numpy()):
        ext, _ = ref_image.upward(ref_image.observed_evidence(x))
        out.append(ref_text.next_token_nll(t, ext[(0, 0)]))
    return np.array(out)


def reference_sample(ref_text, ref_image, task, n, rng, k):
    """Sample n task samples with the reference sampler; returns a batch-like namespace."""
    from types import SimpleNamespace

    v = ref_text.v
    if task == "clip":
        roots_t = [int(rng.integers(v)) for _ in range(n * (k + 1))]
        roots_i = roots_t[: 2 * n] + [int(rng.integers(v)) for _ in range(n * (k - 1))]
        text = np.stack([ref_text.sample(rng, r) for r in roots_t])
        image = np.stack([ref_image.sample(rng, r) for r in roots_i])
        return SimpleNamespace(
            text=torch.from_numpy(text), image=torch.from_numpy(image), batch_size=n, k=k
        )
    roots = [int(rng.integers(v)) for _ in range(n)]
    text = np.stack([ref_text.sample(rng, r) for r in roots])
    image = np.stack([ref_image.sample(rng, r) for r in roots])
    noisy = image + rng.standard_normal(image.shape)
    return SimpleNamespace(
        text=torch.from_numpy(text),
        image=torch.from_numpy(image),
        noisy_image=torch.from_numpy(noisy),
    )


# ------------------------------------------------------------------ timing


def time_ours(joint, task, batch_size, n_batches, repeats, seed):
    """Median samples/s (wall) and mean CPU-time samples/s over ``repeats`` runs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for _ in range(3):  # warm-up (builds the lazy sampler tables)
            bayes_losses(joint, task, sample_task_batch(joint, task, batch_size, gen))
        walls, cpus = [], []
        for _ in range(repeats):
            w, c = time.perf_counter(), time.process_time()
            for _ in range(n_batches):
                bayes_losses(joint, task, sample_task_batch(joint, task, batch_size, gen))
            walls.append(n_batches * batch_size / (time.perf_counter() - w))
            cpus.append(n_batches * batch_size / max(time.process_time() - c, 1e-9))
    return statistics.median(walls), statistics.median(cpus), walls


def time_reference(ref_text, ref_image, task, n, k, sigma, seed):
    rng = np.random.default_rng(seed)
    w, c = time.perf_counter(), time.process_time()
    batch = reference_sample(ref_text, ref_image, task, n, rng, k)
    reference_losses(ref_text, ref_image, task, batch, sigma)
    return n / (time.perf_counter() - w), n / max(time.process_time() - c, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20, help="batches per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--ref-samples",
        type=int,
        nargs=3,
        default=[8, 16, 4],
        metavar=("CLIP", "DNS", "NWP"),
        help="samples timed for the reference",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = GHMConfig(n_layer=4, n_child=3, vocab=10, p=0.2, sigma=1.0)
    k = 4
    joint = JointGHM(cfg)  # float32, as used for training
    joint64 = joint.to(dtype=torch.float64)
    ref_text, ref_image = ReferenceTree(joint64.text), ReferenceTree(joint64.image)
    ref_n = dict(zip(TASKS, args.ref_samples))

    print(
        f"GHM BP benchmark: paper tree, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
        f" of {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared machine)"
    )
    print("cross-check in float64 on one batch of 8 (same data through both implementations):")
    gen = torch.Generator().manual_seed(args.seed)
    for task in TASKS:
        batch = sample_task_batch(joint64, task, 8, gen, k=k)
        ours = bayes_losses(joint64, task, batch).numpy()
        ref = reference_losses(ref_text, ref_image, task, batch, cfg.sigma)
        print(f"  {task}: max |ours - reference| = {np.abs(ours - ref).max():.2e}")

    rows = []
    for task in TASKS:
        wall, cpu, walls = time_ours(
            joint, task, args.batch_size, args.batches, args.repeats, args.seed
        )
        rwall, rcpu = time_reference(
            ref_text, ref_image, task, ref_n[task], k, cfg.sigma, args.seed
        )
        rows.append((task, wall, cpu, min(walls), max(walls), rwall, rcpu))

    print()
    print(
        "| task | mm_data.ghm samples/s (wall, median [min-max]) | CPU-time samples/s | "
        "reference samples/s | ratio (wall) | ratio (CPU) | vs authors' numpy (x) | target 10x met |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for task, wall, cpu, lo, hi, rwall, rcpu in rows:
        print(
            f"| {task} | {wall:,.0f} [{lo:,.0f}-{hi:,.0f}] | {cpu:,.0f} | {rwall:,.1f} | "
            f"{wall / rwall:,.0f}x | {cpu / rcpu:,.0f}x | {wall / AUTHORS[task]:.1f}x | "
            f"{'yes' if wall >= 10 * AUTHORS[task] else 'no'} |"
        )


if __name__ == "__main__":
    main()
