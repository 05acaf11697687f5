"""Regenerate the GHM paper's Figure 2: risk and excess risk vs flip probability p.

For each task (clip, dns, nwp) and variant, trains apps/ghm/train.py at every p and plots
risk / excess risk over the Bayes risk; the clip runs are also scored on zero-shot
classification with M prompts per class (eval.py --zero-shot, panel "zsc"; --zsc-m 0 skips).

    uv run experiments/ghm/figure2.py                                  # reduced CPU sweep
    uv run experiments/ghm/figure2.py --preset paper --device cuda \\
        --tasks clip,dns,nwp --variants standard,shallow,guided        # paper scale (GPU)

Writes OUT/figure2.csv and OUT/figure2.png (+-1 standard-error bands on the Bayes risks
and the zero-shot risks, which are scored on fresh samples); runs that already have a summary.json are
reused, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runs import ROOT, train_once


def run_once(args, task: str, variant: str, p: float) -> dict:
    flags = ["--preset", args.preset, "--task", task, "--variant", variant, "--p", str(p),
             "--device", args.device, *args.extra]  # fmt: skip
    if args.steps:
        flags += ["--steps", str(args.steps)]
    return train_once(Path(args.out) / f"{task}-{variant}-p{p:.2f}", flags)


def zero_shot_once(args, run: Path) -> dict:
    """Zero-shot risk at M = --zsc-m of a clip run (eval.py), cached like the runs."""
    out = run / f"zero-shot-M{args.zsc_m}"
    summary = out / "summary.json"
    if not summary.is_file():
        cmd = [sys.executable, str(ROOT / "apps/ghm/eval.py"), "--run", str(run), "--zero-shot",
               "--m-values", str(args.zsc_m), "--device", args.device, "--out", str(out)]  # fmt: skip
        if args.zsc_samples:
            cmd += ["--samples", str(args.zsc_samples)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    s = json.loads(summary.read_text())
    risk, bayes = s[f"zsc_risk_M{args.zsc_m}"], s["zsc_bayes_risk"]
    return {"risk": risk, "bayes_risk": bayes, "excess_risk": risk - bayes,
            "risk_stderr": s[f"zsc_risk_M{args.zsc_m}_stderr"],
            "bayes_risk_stderr": s["zsc_bayes_risk_stderr"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tasks", default="clip")
    parser.add_argument("--variants", default="standard,shallow")
    parser.add_argument("--p-values", default="0.1,0.2,0.3")
    parser.add_argument("--steps", type=int, default=0, help="override the preset's steps")
    parser.add_argument("--zsc-m", type=int, default=250, help="zero-shot M; 0 = no zsc panel")
    parser.add_argument("--zsc-samples", type=int, default=0, help="zero-shot eval samples")
    parser.add_argument("--out", default="runs/figure2")
    parser.add_argument("extra", nargs="*", help="more train.py flags after --")
    args = parser.parse_args()

    rows = []
    for task in args.tasks.split(","):
        for variant in args.variants.split(","):
            for p in (float(x) for x in args.p_values.split(",")):
                s = run_once(args, task, variant, p)
                rows.append({"task": task, "variant": variant, "p": p, "risk": s["risk"],
                             "bayes_risk": s["bayes_risk"], "excess_risk": s["excess_risk"],
                             "risk_stderr": "", "bayes_risk_stderr": s["bayes_risk_stderr"]})  # fmt: skip
                if task == "clip" and args.zsc_m > 0:
                    run = Path(args.out) / f"{task}-{variant}-p{p:.2f}"
                    rows.append({"task": "zsc", "variant": variant, "p": p,
                                 **zero_shot_once(args, run)})  # fmt: skip
    out = Path(args.out)
    with (out / "figure2.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in ("clip", "zsc", "dns", "nwp") if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(2, len(tasks), figsize=(4 * len(tasks), 6), squeeze=False)
    variants = args.variants.split(",")
    for col, task in enumerate(tasks):
        for variant in variants:
            sel = [r for r in rows if r["task"] == task and r["variant"] == variant]
            ps = [r["p"] for r in sel]
            for row, key in ((0, "risk"), (1, "excess_risk")):
                ys = [r[key] for r in sel]
                (line,) = axes[row, col].plot(ps, ys, marker="o", label=variant)
                # a band where the risk has a standard error (zero-shot is scored on fresh
                # samples; a training risk is a window of training losses and has none)
                ses = [r["risk_stderr"] for r in sel]
                if all(se != "" for se in ses):
                    lo = [y - se for y, se in zip(ys, ses, strict=True)]
                    hi = [y + se for y, se in zip(ys, ses, strict=True)]
                    axes[row, col].fill_between(ps, lo, hi, color=line.get_color(), alpha=0.2)
        bayes = [r for r in rows if r["task"] == task and r["variant"] == variants[0]]
        ps, ys = [r["p"] for r in bayes], [r["bayes_risk"] for r in bayes]
        ses = [r["bayes_risk_stderr"] for r in bayes]
        axes[0, col].plot(ps, ys, "k--", label="Bayes")
        axes[0, col].fill_between(
            ps, [y - e for y, e in zip(ys, ses, strict=True)],
            [y + e for y, e in zip(ys, ses, strict=True)], color="k", alpha=0.15,
        )  # fmt: skip
        axes[0, col].set_title(task)
        axes[1, col].set_xlabel("flip probability p")
        axes[0, col].legend()
    axes[0, 0].set_ylabel("risk")
    axes[1, 0].set_ylabel("excess risk")
    fig.tight_layout()
    fig.savefig(out / "figure2.png", dpi=120)
    print(f"wrote {out / 'figure2.png'}")


if __name__ == "__main__":
    main()
