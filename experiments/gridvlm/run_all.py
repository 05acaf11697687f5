"""The grid study end to end: text vs image accuracy, the probes and the ablations, per seed.

    uv run experiments/gridvlm/run_all.py --out runs/gridvlm-study                 # seeds 0,1,2
    uv run experiments/gridvlm/run_all.py --seeds 0 --out runs/gridvlm-study       # one seed
    uv run experiments/gridvlm/run_all.py --jobs 2 --out runs/gridvlm-study -- --threads 1

For each seed, in OUT/s<seed>/ (apps/gridvlm/train.py, default preset unless --preset):
pretrain, sft and vision once, then the VLM variants (each its own stage directory):

    vlm                the vision stage's ViT tokens, v3 grids (9 Q/A per image)
    vlm-onehot         one token per cell holding its one-hot class (the vision-token ablation)
    vlm-onehot_pos     the same with the cell's position one-hot appended to each token
    vlm-qa3            3 Q/A per image, N images            } #images vs #QA per image: same
    vlm-images_third   3 x 3 disjoint Q/A per image, N/3    } number of samples and Q/A
    vlm-single         one Q/A per sample, the grid repeated (vs multi-instruction = vlm)

then eval.py (every variant on the same validation grids) and probe.py (vlm and
vlm-onehot). A finished stage (summary.json present) is skipped, an unfinished one resumed;
eval.py is skipped when it scored every finished variant on --grids grids, probe.py when
the probe.json exists.
Writes OUT/results.csv (one row per seed), OUT/table.md and OUT/table.csv (mean, std, n),
OUT/summary.json (flat keys <metric>_mean / _std), OUT/accuracy.png (accuracy per model
with std error bars) and OUT/probes.png (probe accuracy per position, encoder vs projector).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "gridvlm"
# tag -> flags of the VLM variant (tag "" is the main VLM)
VARIANTS = {
    "": [],
    "onehot": ["--vlm.encoder", "onehot"],
    "onehot_pos": ["--vlm.encoder", "onehot", "--vlm.onehot-positions"],
    "qa3": ["--vlm.grids", "qa3"],
    "images_third": ["--vlm.grids", "images_third"],
    "single": ["--vlm.grids", "single_instruction"],
}
# the rows of the table: (column name, key in eval's summary.json)
ACCURACIES = [
    ("LM, text", "text_accuracy"),
    ("VLM (ViT), image", "image_accuracy"),
    ("VLM (one-hot cells)", "image_accuracy_onehot"),
    ("VLM (one-hot cells + position)", "image_accuracy_onehot_pos"),
    ("VLM, 3 Q/A x N images", "image_accuracy_qa3"),
    ("VLM, 9 Q/A x N/3 images", "image_accuracy_images_third"),
    ("VLM, single-instruction", "image_accuracy_single"),
    ("VLM's LM, text", "vlm_text_accuracy"),
]


def _run(command: list[str]) -> None:
    """Run one train/eval/probe command; a failure ends the study with its exit status."""
    print("+", " ".join(command), flush=True)
    code = subprocess.run(command).returncode
    if code:
        print(f"error: exit status {code} from: {' '.join(command)}", file=sys.stderr, flush=True)
        raise SystemExit(code)


def stage(args, out: Path, seed: int, name: str, flags: list[str], tag: str = "") -> None:
    """train.py for one stage unless it finished before (resumed when it started)."""
    directory = out / (f"{name}-{tag}" if tag else name)
    if (directory / "summary.json").is_file():
        return
    command = [sys.executable, str(APP / "train.py"), "--preset", args.preset, "--stage", name,
               "--seed", str(seed), "--out", str(out), *flags, *args.extra]  # fmt: skip
    if tag:
        command += ["--tag", tag]
    if directory.is_dir():
        command.append("--resume")
    _run(command)


def one_seed(args, seed: int) -> dict:
    out = Path(args.out) / f"s{seed}"
    for name in ("pretrain", "sft", "vision"):
        stage(args, out, seed, name, [])
    for tag, flags in VARIANTS.items():
        if tag in args.skip:
            continue
        stage(args, out, seed, "vlm", flags, tag)
    if not evaluated(out, args):
        _run([sys.executable, str(APP / "eval.py"), "--run", str(out), "--grids", str(args.grids)])
    result = json.loads((out / "summary.json").read_text())
    for name in ("vlm", "vlm-onehot"):
        if (out / name / "model").is_dir() and not (out / name / "probe.json").is_file():
            _run([sys.executable, str(APP / "probe.py"), "--run", str(out), "--stage", name,
                  "--train-grids", str(args.probe_train_grids),
                  "--test-grids", str(args.probe_test_grids)])  # fmt: skip
        if (out / name / "probe.json").is_file():
            probe = json.loads((out / name / "probe.json").read_text())
            for kind, values in probe["per_position"].items():
                result[f"probe_{name}_{kind}"] = values
                result[f"probe_{name}_{kind}_mean"] = probe["mean"][kind]
    return result


def evaluated(out: Path, args) -> bool:
    """eval.py already scored every finished VLM variant on as many grids (not redone)."""
    path = out / "summary.json"
    if not path.is_file():
        return False
    summary = json.loads(path.read_text())
    if summary.get("grids") != args.grids or "text_accuracy" not in summary:
        return False
    tags = [tag for tag in VARIANTS if tag not in args.skip
            and ((out / (f"vlm-{tag}" if tag else "vlm")) / "summary.json").is_file()]  # fmt: skip
    keys = [f"image_accuracy_{tag}" if tag else "image_accuracy" for tag in tags]
    return all(key in summary for key in keys)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--grids", type=int, default=250, help="validation grids decoded")
    parser.add_argument("--skip", default="", help="VLM variants to leave out, e.g. qa3,single")
    parser.add_argument("--probe-train-grids", type=int, default=2_000, help="probe.py's")
    parser.add_argument("--probe-test-grids", type=int, default=250, help="probe.py's")
    parser.add_argument("--out", default="runs/gridvlm-study")
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="seeds run side by side (each seed's stages stay in order); pass --threads to "
        "train.py after -- so that jobs x threads fits the cores",
    )  # fmt: skip
    parser.add_argument("extra", nargs="*", help="more train.py flags after --")
    args = parser.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    unknown = args.skip - set(VARIANTS)
    if unknown:
        parser.error(f"--skip: unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)[1:]}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    if not seeds or len(set(seeds)) != len(seeds):
        parser.error(f"--seeds {args.seeds!r}: expected distinct seeds, e.g. 0,1,2")
    for name in ("jobs", "grids", "probe_train_grids", "probe_test_grids"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # one thread per seed, each waiting on its own train.py / eval.py subprocesses
        done = pool.map(lambda seed: one_seed(args, seed), seeds)
        results = dict(zip(seeds, done, strict=True))

    from mm_eval.identifiability import write_results_csv
    from mm_train import atomic_write_json, atomic_write_text

    out = Path(args.out)
    rows, flat = [], {}
    for label, key in ACCURACIES:
        values = [r[key] for r in results.values() if key in r]
        if values:
            mean, std = _mean_std(values)
            rows.append({"model": label, "key": key, "mean": mean, "std": std, "n": len(values)})
            flat[f"{key}_mean"], flat[f"{key}_std"] = mean, std
    for name in ("vlm", "vlm-onehot"):
        for kind in ("encoder", "projector"):
            values = [r[f"probe_{name}_{kind}_mean"] for r in results.values()
                      if f"probe_{name}_{kind}_mean" in r]  # fmt: skip
            if values:
                mean, std = _mean_std(values)
                key = f"probe_{name}_{kind}"
                rows.append({"model": f"probe, {name} {kind} tokens", "key": key, "mean": mean,
                             "std": std, "n": len(values)})  # fmt: skip
                flat[f"{key}_mean"], flat[f"{key}_std"] = mean, std
    per_seed = [{"seed": s, **{k: v for k, v in r.items() if isinstance(v, float)}}
                for s, r in results.items()]  # fmt: skip
    write_results_csv(per_seed, out / "results.csv")
    write_results_csv(rows, out / "table.csv")
    lines = ["| model | accuracy (mean +- std) | seeds |", "|---|---|---|"]
    lines += [f"| {r['model']} | {r['mean']:.3f} +- {r['std']:.3f} | {r['n']} |" for r in rows]
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "summary.json", flat)
    plot(rows, results, out)
    print("\n".join(lines))
    print(f"wrote {out / 'table.md'}, {out / 'results.csv'}, accuracy.png and probes.png")


def plot(rows: list[dict], results: dict, out: Path) -> None:
    """Accuracy per model (std error bars) and probe accuracy per position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    acc = [r for r in rows if not r["key"].startswith("probe")]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(range(len(acc)), [r["mean"] for r in acc], yerr=[r["std"] for r in acc], capsize=3)
    ax.set_xticks(range(len(acc)))
    ax.set_xticklabels([r["model"] for r in acc], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for kind, style in (("encoder", "o-"), ("projector", "s--")):
        key = f"probe_vlm_{kind}"
        curves = [r[key] for r in results.values() if key in r]
        if curves:
            values = np.asarray(curves)
            std = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(values.shape[1])
            ax.errorbar(range(values.shape[1]), values.mean(axis=0), yerr=std, fmt=style,
                        capsize=3, label=f"ViT {kind} tokens")  # fmt: skip
    ax.set_xlabel("grid position (row-major)")
    ax.set_ylabel("held-out probe accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "probes.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
