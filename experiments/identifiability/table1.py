"""The numerical simulation's Table 1: five latent settings x two model settings x seeds,
with the test-time content intervention, beside the paper's numbers.

    uv run experiments/identifiability/table1.py --jobs 2            # CPU preset, 3 seeds
    uv run experiments/identifiability/table1.py --seeds 0 --rows 4  # one row, one seed
    uv run experiments/identifiability/table1.py --preset paper --eval-preset paper \\
        --device cuda --jobs 4                                        # the paper's scale

Rows (style-change probability, statistical dependence, content-dependent style):
1: (1.0, no, no)  2: (0.75, no, no)  3: (0.75, yes, no)  4: (0.75, no, yes)  5: (0.75, yes, yes).
Settings: multimodal (f1 != f2, separate encoders, 5 modality-specific dims per view) and
original (f1 = f2, one shared encoder, no modality-specific dims: the multi-view setting).

Each run lives in OUT/<setting>/row<k>/s<seed>/: apps/identifiability/train.py, then
eval.py (results.csv) and, for the rows with a dependence, eval.py --intervention
(results_intervention.csv). A step whose output exists is not redone, an interrupted
training is resumed; --jobs runs that many runs side by side (one torch thread each by
default). Writes OUT/table.md (mean +- std over seeds beside the paper's values),
OUT/table.csv, OUT/runs.csv (every run, encoder and target) and OUT/table.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "identifiability"
# row -> (style-change probability, statistical dependence, content-dependent style)
ROWS = {
    1: (1.0, False, False),
    2: (0.75, False, False),
    3: (0.75, True, False),
    4: (0.75, False, True),
    5: (0.75, True, True),
}
SETTINGS = {
    "multimodal": [],
    "original": ["--shared-mixing", "--shared-encoder", "--modality-n", "0"],
}
# Daunhawer et al., ICLR 2023, Table 1 (nonlinear R^2, kernel ridge; mean, std over 3 seeds)
PAPER = {
    "multimodal": {
        1: {"c": (0.99, 0.00), "s": (0.00, 0.00), "m": (0.00, None)},
        2: {"c": (1.00, 0.00), "s": (0.00, 0.00), "m": (0.00, None)},
        3: {"c": (0.95, 0.01), "s": (0.56, 0.23), "m": (0.00, None)},
        4: {"c": (0.98, 0.00), "s": (0.87, 0.04), "m": (0.00, None)},
        5: {"c": (0.95, 0.03), "s": (0.89, 0.07), "m": (0.00, None)},
    },
    "original": {
        1: {"c": (1.00, None), "s": (0.00, None)},
        2: {"c": (0.99, None), "s": (0.00, None)},
        3: {"c": (0.99, None), "s": (0.52, 0.09)},
        4: {"c": (1.00, None), "s": (0.79, 0.04)},
        5: {"c": (0.99, None), "s": (0.81, 0.04)},
    },
}
# the paper's appendix intervention (c -> c'): style R^2 under causal-only dependence
PAPER_INTERVENTION_STYLE = {3: 0.5, 4: 0.03}


def row_flags(row: int) -> list[str]:
    p, statistical, causal = ROWS[row]
    flags = ["--style-change-prob", str(p)]
    if statistical:
        flags.append("--statistical-dependence")
    if causal:
        flags.append("--content-dependent-style")
    return flags


def has_dependence(row: int) -> bool:
    return ROWS[row][1] or ROWS[row][2]


def _run(command: list[str], log: Path) -> None:
    print("+", " ".join(command), flush=True)
    with log.open("a") as f:
        result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with status {result.returncode}; see {log}")


def one_run(args: argparse.Namespace, setting: str, row: int, seed: int) -> Path:
    """Train and evaluate one (setting, row, seed) unless done; returns its directory."""
    out = Path(args.out) / setting / f"row{row}" / f"s{seed}"
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"s{seed}.log"
    common = ["--device", args.device, "--threads", str(args.threads)]
    if not (out / "summary.json").is_file() or not (out / "checkpoints").is_dir():
        train = [sys.executable, str(APP / "train.py"), "--preset", args.preset,
                 *row_flags(row), *SETTINGS[setting], "--seed", str(seed), "--out", str(out),
                 *common, *args.extra]  # fmt: skip
        if (out / "config.json").is_file():
            train.append("--resume")
        _run(train, log)
    evaluate = [sys.executable, str(APP / "eval.py"), "--preset", args.eval_preset,
                "--run", str(out), *common, *args.eval_flags.split()]  # fmt: skip
    if not (out / "results.csv").is_file():
        _run(evaluate, log)
    if has_dependence(row) and not (out / "results_intervention.csv").is_file():
        _run([*evaluate, "--intervention"], log)
    print(f"done: {setting} row {row} seed {seed}", flush=True)
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def scores(run: Path, intervention: bool = False) -> dict[str, float]:
    """Nonlinear R^2 per target, averaged over the two encoders; m = mean of m1 (hz1) and
    m2 (hz2) (each encoder's own modality-specific part, the larger leak)."""
    name = "results_intervention.csv" if intervention else "results.csv"
    values: dict[str, list[float]] = {}
    for r in read_rows(run / name):
        values.setdefault(r["target"], []).append(float(r["r2_nonlinear"]))
        own = {"hz1": "m1", "hz2": "m2"}[r["encoder"]]
        if r["target"] == own:
            values.setdefault("m", []).append(float(r["r2_nonlinear"]))
    return {k: statistics.fmean(v) for k, v in values.items() if k not in ("m1", "m2")}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(stats: tuple[float, float] | None) -> str:
    return "-" if stats is None else f"{stats[0]:.2f} +- {stats[1]:.2f}"


def _paper(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "-"
    return f"{value[0]:.2f}" + ("" if value[1] is None else f" +- {value[1]:.2f}")


def summarise(args, runs: dict[tuple[str, int, int], Path]) -> list[dict]:
    """One table row per (setting, row): mean, std over seeds of every target."""
    table = []
    for setting in args.settings:
        for row in args.rows:
            seeds = [s for (st, r, s) in runs if st == setting and r == row]
            per_seed = [scores(runs[setting, row, s]) for s in seeds]
            entry = {"setting": setting, "row": row, "seeds": len(seeds)}
            p, statistical, causal = ROWS[row]
            entry |= {"p_change": p, "statistical": statistical, "causal": causal}
            for target in ("c", "s", "s_tilde", "m"):
                values = [sc[target] for sc in per_seed if target in sc]
                if values:
                    entry[f"{target}_mean"], entry[f"{target}_std"] = _mean_std(values)
            if has_dependence(row):
                inter = [scores(runs[setting, row, s], intervention=True) for s in seeds]
                for target in ("c", "c_prime", "s"):
                    values = [sc[target] for sc in inter]
                    entry[f"int_{target}_mean"], entry[f"int_{target}_std"] = _mean_std(values)
            for target in ("c", "s", "m"):
                value = PAPER[setting][row].get(target)
                entry[f"paper_{target}"] = None if value is None else value[0]
            table.append(entry)
    return table


def markdown(table: list[dict]) -> str:
    def stats(entry, key):
        return (entry[f"{key}_mean"], entry[f"{key}_std"]) if f"{key}_mean" in entry else None

    lines = []
    for setting in dict.fromkeys(e["setting"] for e in table):
        lines += [f"### {setting}", "",
                  "| row | p(change) | stat. | causal | c | paper c | s | paper s | m_i | paper m_i |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for e in (e for e in table if e["setting"] == setting):
            paper = PAPER[setting][e["row"]]
            lines.append(
                f"| {e['row']} | {e['p_change']} | {'yes' if e['statistical'] else 'no'} | "
                f"{'yes' if e['causal'] else 'no'} | {_cell(stats(e, 'c'))} | "
                f"{_paper(paper.get('c'))} | {_cell(stats(e, 's'))} | {_paper(paper.get('s'))} "
                f"| {_cell(stats(e, 'm'))} | {_paper(paper.get('m'))} |"
            )
        lines.append("")
        inter = [e for e in table if e["setting"] == setting and "int_c_mean" in e]
        if inter:
            lines += ["Intervention (the content entering the mixing replaced by another "
                      "sample's):", "",
                      "| row | c | c' | s | paper s |", "|---|---|---|---|---|"]  # fmt: skip
            for e in inter:
                paper_s = PAPER_INTERVENTION_STYLE.get(e["row"])
                lines.append(
                    f"| {e['row']} | {_cell(stats(e, 'int_c'))} | {_cell(stats(e, 'int_c_prime'))} "
                    f"| {_cell(stats(e, 'int_s'))} | {'-' if paper_s is None else paper_s} |"
                )
            lines.append("")
    return "\n".join(lines)


def plot(table: list[dict], path: Path) -> None:
    """Per setting: bars of c, s, m (mean, std over seeds) per row, the paper's as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(e["setting"] for e in table))
    fig, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 3.4), squeeze=False)
    width = 0.26
    for ax, setting in zip(axes[0], settings):
        entries = [e for e in table if e["setting"] == setting]
        xs = range(len(entries))
        for k, (target, color) in enumerate(
            (("c", "tab:green"), ("s", "tab:orange"), ("m", "tab:blue"))
        ):
            pos = [x + (k - 1) * width for x in xs]
            means = [e.get(f"{target}_mean", float("nan")) for e in entries]
            stds = [e.get(f"{target}_std", 0.0) for e in entries]
            ax.bar(pos, means, width, yerr=stds, capsize=2, color=color, label=target)
            paper = [e.get(f"paper_{target}") for e in entries]
            paper = [float("nan") if v is None else v for v in paper]
            ax.plot(pos, paper, "k_", markersize=10, markeredgewidth=2)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"row {e['row']}" for e in entries])
        ax.set_title(f"{setting} (black: paper)")
        ax.set_ylim(-0.05, 1.1)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].set_ylabel("nonlinear R$^2$ (test)")
    axes[0, -1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--rows", default="1,2,3,4,5", help="comma-separated, of 1-5")
    parser.add_argument("--settings", default="multimodal,original", help="comma-separated")
    parser.add_argument("--preset", default="default", help="train.py preset")
    parser.add_argument("--eval-preset", default="default", help="eval.py preset")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side")
    parser.add_argument(
        "--eval-flags", default="", help="more eval.py flags, one string (e.g. '--val-samples 600')"
    )
    parser.add_argument("--out", default="runs/identifiability-table1")
    parser.add_argument("extra", nargs="*", help="more train.py flags after --")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
        args.rows = [int(r) for r in args.rows.split(",")]
    except ValueError as err:
        parser.error(f"--seeds / --rows take comma-separated integers ({err})")
    if not set(args.rows) <= set(ROWS):
        parser.error(f"--rows {sorted(set(args.rows) - set(ROWS))}: rows are 1-5")
    args.settings = args.settings.split(",")
    if not set(args.settings) <= set(SETTINGS):
        parser.error(f"--settings: choose from {list(SETTINGS)}, got {args.settings}")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: must be >= 1")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    keys = [(st, r, s) for st in args.settings for r in args.rows for s in args.seeds]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {key: pool.submit(one_run, args, *key) for key in keys}
        # the first failure (or a SIGTERM'd training) stops the queue: no run starts after it
        concurrent.futures.wait(futures.values(), return_when="FIRST_EXCEPTION")
        for future in futures.values():
            future.cancel()
        runs = {key: future.result() for key, future in futures.items()}

    from mm_eval.identifiability import write_results_csv
    from mm_train import atomic_write_text

    out = Path(args.out)
    every = []
    for (setting, row, seed), run in runs.items():
        for name in ("results.csv", "results_intervention.csv"):
            if (run / name).is_file():
                for r in read_rows(run / name):
                    every.append({"setting": setting, "row": row, "seed": seed,
                                  "intervention": name != "results.csv", **r})  # fmt: skip
    write_results_csv(every, out / "runs.csv")
    table = summarise(args, runs)
    write_results_csv(table, out / "table.csv")
    text = markdown(table)
    atomic_write_text(out / "table.md", text)
    plot(table, out / "table.png")
    print(text)
    print(f"wrote {out / 'table.md'}, table.csv, runs.csv and table.png")
    return table


if __name__ == "__main__":
    main()
