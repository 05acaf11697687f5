"""Forward+backward time and peak memory of mm_losses' `clip` vs open_clip's `ClipLoss`.

    uv run --with open_clip_torch python experiments/bench/bench_losses_clip.py

open_clip_torch is installed only into this run's environment (the workspace does not
depend on it). Every measurement runs in a fresh subprocess. Time: median and minimum of
several fwd+bwd repetitions after a warm-up; the ratio uses the minimum, the figure least
disturbed by other processes on a shared machine. Each configuration is timed with 1 torch
thread and with 2 (``--threads``); on a shared 2-core machine the single-thread numbers
are the stable ones. Peak memory: growth of the resident set's peak over one fwd+bwd,
right after creating the inputs (the peak is reset through /proc/self/clear_refs and read
as VmHWM; ru_maxrss where that is not available). Both losses get the same L2-normalised
fp32 features and the same temperature; ours runs at its defaults (it normalises the
features again and checks its inputs; a third column turns the checks off), open_clip's
loss takes the features as they are.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

DIM = 512
BATCHES = (256, 1024, 4096)
MEMORY_BATCH = 4096
TAU = 0.07


def _make_loss(impl: str, learnable: bool):
    """A callable loss(image, text) and the parameters it owns."""
    import torch

    if impl in ("ours", "ours_unchecked"):
        import mm_losses

        mode = "learnable" if learnable else "fixed"
        # the defaults: normalisation (again: the inputs are unit vectors) and input checks
        loss = mm_losses.build("clip", tau=TAU, temperature=mode, check_inputs=impl == "ours")
        return loss, list(loss.parameters())
    from open_clip.loss import ClipLoss

    peer = ClipLoss()
    logit_scale = torch.tensor(math.log(1 / TAU), requires_grad=learnable)

    def call(image, text):
        return peer(image, text, logit_scale.exp())

    return call, [logit_scale] if learnable else []


def _inputs(batch: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(batch, DIM, generator=g), dim=-1)
    text = torch.nn.functional.normalize(image + torch.randn(batch, DIM, generator=g), dim=-1)
    return image.requires_grad_(), text.requires_grad_()


def child_time(impl: str, batch: int, learnable: bool, repeats: int) -> dict:
    loss, params = _make_loss(impl, learnable)
    image, text = _inputs(batch)

    def step():
        image.grad = text.grad = None
        for p in params:
            p.grad = None
        loss(image, text).backward()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def _resident_kib(field: str) -> int | None:
    """VmRSS / VmHWM of this process in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_memory(impl: str, batch: int, learnable: bool) -> dict:
    loss, _ = _make_loss(impl, learnable)
    small_image, small_text = _inputs(8)
    loss(small_image, small_text).backward()  # lazy initialisation outside the measurement
    image, text = _inputs(batch)
    if _reset_peak() and _resident_kib("VmRSS") is not None:
        before = _resident_kib("VmRSS")
        loss(image, text).backward()
        return {"peak_mib": (_resident_kib("VmHWM") - before) / 1024}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    loss(image, text).backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": (after - before) / 1024}


def _run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)"
    )
    args = parser.parse_args()
    threads = [int(n) for n in args.threads.split(",")]

    import torch

    if args.child is not None:
        torch.set_num_threads(threads[0])
        kind, impl, batch, learnable = args.child
        learn = learnable == "1"
        if kind == "time":
            result = child_time(impl, int(batch), learn, args.repeats)
        else:
            result = child_memory(impl, int(batch), learn)
        print(json.dumps(result))
        return

    print(f"torch {torch.__version__}, d={DIM}, fp32 CPU, {os.cpu_count()} cores visible")
    print()
    print(
        "| threads | B | temperature | ours (defaults) min / median (ms) "
        "| ours check_inputs=False min (ms) | open_clip min / median (ms) "
        "| ratio ours/peer (min) |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|", flush=True)
    for n_threads in threads:
        for batch in BATCHES:
            for learnable in ("0", "1"):
                repeats = str(args.repeats if batch < 4096 else max(3, args.repeats // 2))
                options = ("--repeats", repeats, "--threads", str(n_threads))
                # A fresh process per measurement: the peer, then ours.
                peer = _run_child("time", "peer", str(batch), learnable, *options)
                ours = _run_child("time", "ours", str(batch), learnable, *options)
                unchecked = _run_child("time", "ours_unchecked", str(batch), learnable, *options)
                mode = "learnable" if learnable == "1" else "fixed"
                ratio = ours["min_s"] / peer["min_s"]
                print(
                    f"| {n_threads} | {batch} | {mode} "
                    f"| {1e3 * ours['min_s']:.2f} / {1e3 * ours['median_s']:.2f} "
                    f"| {1e3 * unchecked['min_s']:.2f} "
                    f"| {1e3 * peer['min_s']:.2f} / {1e3 * peer['median_s']:.2f} | {ratio:.2f} |",
                    flush=True,
                )
    print()
    print(
        f"| peak memory over one fwd+bwd, B={MEMORY_BATCH} | ours (MiB) | open_clip (MiB) | ratio |"
    )
    print("|---|---:|---:|---:|")
    for learnable in ("0", "1"):
        options = ("--threads", str(threads[0]))
        ours = _run_child("memory", "ours", str(MEMORY_BATCH), learnable, *options)
        peer = _run_child("memory", "peer", str(MEMORY_BATCH), learnable, *options)
        mode = "learnable" if learnable == "1" else "fixed"
        print(
            f"| temperature {mode} | {ours['peak_mib']:.0f} | {peer['peak_mib']:.0f} | "
            f"{ours['peak_mib'] / peer['peak_mib']:.2f} |"
        )


if __name__ == "__main__":
    main()
