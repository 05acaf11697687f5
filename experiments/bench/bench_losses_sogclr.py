"""Benchmark: mm_losses' SogCLR family against LibAUC's GCLoss_v2 (CPU, fp32).

Times forward + backward of ``sogclr`` vs ``GCLoss_v2`` (global constant temperature)
and ``isogclr`` vs ``GCLoss_v2(temperature_scheme="individual_learnable")`` at several
batch sizes, prints a table with the ratio ours / peer, measures the peak memory of one
step at the largest batch (a fresh subprocess per configuration: growth of the peak
resident set, VmHWM, over one forward + backward; Linux only), and checks once that the
gradients are proportional (LibAUC's loss is (B-1)/2 times ours:
it sums over the negatives and averages the two sides).

The peer is installed only in the benchmark's environment:

    uv run --with libauc python experiments/bench/bench_losses_sogclr.py

Options: --sizes 256 1024 4096 --dim 512 --repeats 3 --threads N.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import time

import torch

import mm_losses

NUM_SAMPLES = 100_000
TAU = 0.01
PAIRS = [("sogclr", "global_constant"), ("isogclr", "individual_learnable")]


def build(impl: str, kind: str, **options):
    """A fresh loss: impl 'ours' (mm_losses name, at its defaults: it normalises the
    features again and checks its inputs) or 'peer' (GCLoss_v2 scheme)."""
    if impl == "ours":
        return mm_losses.build(kind, num_samples=NUM_SAMPLES, tau=TAU, gamma=0.8, **options)
    from libauc.losses import GCLoss_v2

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its gamma schedule
        return GCLoss_v2(
            N=NUM_SAMPLES, tau=TAU, gamma=0.8, temperature_scheme=kind, tau_min=0.005, tau_max=1.0
        )


def step(loss_fn, x, t, index) -> torch.Tensor:
    """One forward + backward; returns the loss value (LibAUC's isogclr returns a tuple)."""
    x.grad = t.grad = None
    out = loss_fn(x, t, index)
    value = out[0] if isinstance(out, tuple) else out
    value.backward()
    return value.detach()


def inputs(batch: int, dim: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=1)
    t = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=1)
    index = torch.randperm(NUM_SAMPLES, generator=gen)[:batch]
    return x.requires_grad_(), t.requires_grad_(), index


def _rss_kib() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(rest.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def peak_memory_worker(impl: str, kind: str, batch: int, dim: int) -> None:
    """Runs in a fresh process: peak RSS growth (MiB) over one forward + backward.

    The peak-RSS mark is reset first (``echo 5 > /proc/self/clear_refs``), so the number is
    what the step itself adds on top of the inputs, the module and its state.
    """
    x, t, index = inputs(batch, dim)
    loss_fn = build(impl, kind)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before, _ = _rss_kib()
    step(loss_fn, x, t, index)
    _, peak = _rss_kib()
    print(json.dumps({"peak_mib": (peak - before) / 1024.0}))


def peak_memory(impl: str, kind: str, batch: int, dim: int, threads: int) -> float:
    cmd = [sys.executable, __file__, "--threads", str(threads), "--worker", impl, kind]
    cmd += [str(batch), str(dim)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def check_gradients(dim: int) -> float:
    """Max relative deviation of (B-1)/2 * our gradient from the peer's (first step)."""
    worst = 0.0
    batch = 256
    for ours_kind, peer_kind in PAIRS:
        grads = []
        for impl, kind in (("ours", ours_kind), ("peer", peer_kind)):
            x, t, index = inputs(batch, dim, seed=1)
            # the peer takes normalised features as they are: compare without our
            # normalisation, at the peer's scale
            options = {"normalize": False, "reference_scale": True} if impl == "ours" else {}
            step(build(impl, kind, **options), x, t, index)
            grads.append(torch.cat([x.grad, t.grad]))
        scaled, peer = grads
        worst = max(worst, float((scaled - peer).norm() / peer.norm()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        impl, kind, batch, dim = args.worker
        peak_memory_worker(impl, kind, int(batch), int(dim))
        return
    try:
        import libauc
    except ImportError:
        sys.exit("the peer is missing: run with `uv run --with libauc python " + __file__ + "`")

    print(f"torch {torch.__version__}, libauc {libauc.__version__}, CPU threads {args.threads}")
    print(f"d={args.dim}, fp32, num_samples={NUM_SAMPLES}, tau={TAU}, repeats={args.repeats}")
    rel = check_gradients(args.dim)
    print(f"gradient check: ||ours (reference_scale) - peer|| / ||peer|| = {rel:.2e} (B=256)")
    assert rel < 1e-3, "gradients are not proportional"

    rows = []
    for batch in args.sizes:
        for ours_kind, peer_kind in PAIRS:
            times = {"ours": [], "peer": []}
            modules = {"ours": build("ours", ours_kind), "peer": build("peer", peer_kind)}
            data = inputs(batch, args.dim)
            for impl in ("ours", "peer"):  # warm-up
                step(modules[impl], *data)
            for _ in range(args.repeats):  # interleaved, so load changes hit both
                for impl in ("ours", "peer"):
                    start = time.perf_counter()
                    step(modules[impl], *data)
                    times[impl].append(time.perf_counter() - start)
            ours_ms = 1000 * statistics.median(times["ours"])
            peer_ms = 1000 * statistics.median(times["peer"])
            rows.append((batch, ours_kind, ours_ms, peer_ms, ours_ms / peer_ms))
            print(f"  B={batch} {ours_kind}: ours {ours_ms:.1f} ms, peer {peer_ms:.1f} ms")

    largest = max(args.sizes)
    memory = {}
    for ours_kind, peer_kind in PAIRS:
        memory[ours_kind] = (
            peak_memory("ours", ours_kind, largest, args.dim, args.threads),
            peak_memory("peer", peer_kind, largest, args.dim, args.threads),
        )

    print()
    print("| B | loss | ours (ms) | LibAUC GCLoss_v2 (ms) | ratio ours/peer |")
    print("|---|---|---|---|---|")
    for batch, kind, ours_ms, peer_ms, ratio in rows:
        print(f"| {batch} | {kind} | {ours_ms:.1f} | {peer_ms:.1f} | {ratio:.2f} |")
    print()
    print(f"| peak memory, B={largest} | ours (MiB) | LibAUC (MiB) | ratio ours/peer |")
    print("|---|---|---|---|")
    for kind, (ours_mib, peer_mib) in memory.items():
        print(f"| {kind} | {ours_mib:.0f} | {peer_mib:.0f} | {ours_mib / peer_mib:.2f} |")


if __name__ == "__main__":
    main()
