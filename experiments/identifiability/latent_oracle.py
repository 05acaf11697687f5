"""Lp-SimCLR on the latents themselves: is a style residue the loss's or the encoder's doing?

The simulation's encoders must undo a random invertible MLP before they can drop style. This
script removes that difficulty: each view's encoder is one Linear(15 -> encoding size) applied
to z1 = (c, s, m1) and z2 = (c, s~, m2) directly (no mixing), trained with the app's loss
(lp_simclr, negatives from a fresh batch through the anchor's own encoder). Every
`--eval-every` steps it records the linear R^2 of c, s, s~ and the view's m from each
encoder on a fixed test set, and the loss's distance from its floor -log(M + 1) (M negatives):
once every negative is far from its anchor the loss sits at the floor, all its gradients
vanish (each is weighted by the softmax mass on the negatives), and whatever style the
encoder holds then is kept.

    uv run experiments/identifiability/latent_oracle.py                  # ~20 min, 1 thread
    uv run experiments/identifiability/latent_oracle.py --settings statistical --seeds 0

Settings: `independent` (identity covariances), `statistical` (independent Wishart
draws), `equal` (statistical dependence with the original code's equal draws). Writes
OUT/oracle.csv (setting, seed, step, loss_gap, encoder, target, r2_linear), OUT/oracle.png
and prints the final table, with the largest style invariance per run: the correlation of
s and s~ along the style direction that the style change perturbs least.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import mm_losses
from mm_data.identifiability import LatentConfig, LatentModel
from mm_eval.identifiability import evaluate_prediction, write_results_csv
from mm_train.logging import Progress

SETTINGS = {  # name -> LatentConfig fields
    "independent": {},
    "statistical": {"statistical_dependence": True, "covariances": "independent"},
    "equal": {"statistical_dependence": True, "covariances": "equal"},
}
VIEW_TARGETS = {"hz1": ("c", "s", "s_tilde", "m1"), "hz2": ("c", "s", "s_tilde", "m2")}


def style_directions(model: LatentModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised eigendirections of (Sigma_s, Sigma_a), most invariant first.

    Returns (r, U): r[k] = u_k' Sigma_s u_k / u_k' Sigma_a u_k (descending) and U[:, k] = u_k,
    scaled to unit length. When every style dim changes (style_change_prob = 1) and style
    does not depend on content, corr(u_k.s, u_k.s~) = sqrt(r_k / (1 + r_k)).
    """
    inv = torch.linalg.inv(torch.linalg.cholesky(model.covariance("a")))
    r, q = torch.linalg.eigh(inv @ model.covariance("s") @ inv.T)
    u = inv.T @ q
    order = r.argsort(descending=True)
    u = u[:, order]
    return r[order], u / u.norm(dim=0, keepdim=True)


def max_style_invariance(model: LatentModel) -> float:
    """max over directions u of corr(u.s, u.s~) = sqrt(r / (1 + r)), r = u'S_s u / u'S_a u.

    With identity (or equal) covariances and c_param = 1 every direction has r = 1 (corr
    0.71). Assumes every style dim changes and no content-dependent style.
    """
    r = style_directions(model)[0][0].item()
    return math.sqrt(r / (1 + r))


def loss_floor(n_negatives: int) -> float:
    """Lp-SimCLR's infimum: positive at distance 0, every negative infinitely far."""
    return -math.log(n_negatives + 1)


def train_oracle(
    setting: str,
    seed: int,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-2,
    encoding_size: int = 5,
    eval_every: int = 1000,
    test_size: int = 10_000,
    weight_decay: float = 0.0,
    progress: bool = True,
) -> list[dict]:
    """Train the two linear encoders on one latent model; rows of the R^2 trajectory."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {list(SETTINGS)}")
    if steps < 1 or eval_every < 1 or batch_size < 2 or test_size < 4:
        raise ValueError(
            f"need steps >= 1, eval_every >= 1, batch_size >= 2, test_size >= 4; got "
            f"{steps}, {eval_every}, {batch_size}, {test_size}"
        )
    model = LatentModel(LatentConfig(seed=seed, **SETTINGS[setting]))
    view_dim = model.cfg.view_dim
    torch.manual_seed(seed)
    g1, g2 = nn.Linear(view_dim, encoding_size), nn.Linear(view_dim, encoding_size)
    params = [*g1.parameters(), *g2.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    loss_fn = mm_losses.build("lp_simclr", tau=1.0)
    data = torch.Generator().manual_seed(seed + 1)
    fit_set = model.sample(test_size, generator=torch.Generator().manual_seed(seed + 2))
    test_set = model.sample(test_size, generator=torch.Generator().manual_seed(seed + 3))
    floor = loss_floor(batch_size)
    rows: list[dict] = []
    recent: list[float] = []
    bar = Progress(steps, desc=f"{setting} seed {seed}", enabled=progress)
    for step in range(1, steps + 1):
        pos, neg = (
            model.sample(batch_size, generator=data),
            model.sample(batch_size, generator=data),
        )
        h1, h1_neg = g1(torch.cat([pos.z1, neg.z1])).split(batch_size)
        h2, h2_neg = g2(torch.cat([pos.z2, neg.z2])).split(batch_size)
        loss = loss_fn(h1, h2, image_negatives=h1_neg, text_negatives=h2_neg)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 2.0)
        optimizer.step()
        recent = [*recent[-49:], loss.item()]
        bar.update(1, samples=batch_size, loss_gap=recent[-1] - floor)
        if step % eval_every and step != steps:
            continue
        with torch.no_grad():
            encoded = {
                "hz1": (g1(fit_set.z1).numpy(), g1(test_set.z1).numpy()),
                "hz2": (g2(fit_set.z2).numpy(), g2(test_set.z2).numpy()),
            }
        for encoder, targets in VIEW_TARGETS.items():
            fit_z, test_z = encoded[encoder]
            for target in targets:
                r2 = evaluate_prediction(
                    fit_z,
                    getattr(fit_set, target).numpy(),
                    test_z,
                    getattr(test_set, target).numpy(),
                    "linear",
                )
                rows.append({
                    "setting": setting, "seed": seed, "step": step,
                    "loss_gap": float(np.mean(recent)) - floor,
                    "encoder": encoder, "target": target, "r2_linear": r2,
                })  # fmt: skip
    bar.close()
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Left: R^2 of s from hz1 against step, one line per run. Right: loss gap to the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_gap) = plt.subplots(1, 2, figsize=(9, 3.4))
    colors = dict(zip(SETTINGS, ("tab:green", "tab:red", "tab:blue")))
    runs = dict.fromkeys((r["setting"], r["seed"]) for r in rows)
    for setting, seed in runs:
        sel = [r for r in rows if r["setting"] == setting and r["seed"] == seed]
        s_rows = [r for r in sel if r["encoder"] == "hz1" and r["target"] == "s"]
        steps = [r["step"] for r in s_rows]
        label = setting if seed == min(s for st, s in runs if st == setting) else None
        ax_s.plot(steps, [r["r2_linear"] for r in s_rows], color=colors[setting], label=label)
        ax_gap.plot(steps, [max(r["loss_gap"], 1e-4) for r in s_rows], color=colors[setting])
    ax_s.axhline(0.2, color="gray", ls=":", lw=1)
    ax_s.set(xlabel="step", ylabel="linear R$^2$ of s from hz1", ylim=(-0.02, 1))
    ax_s.legend(fontsize=8)
    ax_gap.set(xlabel="step", ylabel="loss - floor (mean of 50 steps)", yscale="log")
    for ax in (ax_s, ax_gap):
        ax.grid(alpha=0.3)
    fig.suptitle("Lp-SimCLR with a linear encoder on the latents (no mixing)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated")
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated latent-model seeds")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument(
        "--weight-decay", type=float, default=0.0, help="AdamW decoupled weight decay (0 = Adam)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="runs/ident-oracle")
    args = parser.parse_args(argv)
    settings = args.settings.split(",")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        parser.error(f"--settings: unknown {unknown}; choose from {list(SETTINGS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated ints, got {args.seeds!r}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    print(f"{'setting':<12} {'seed':>4} {'max corr(s,s~)':>14} {'loss-floor':>10} "
          f"{'R2 c':>6} {'R2 s':>6} {'R2 s~':>6} {'R2 m':>6}  (hz1; linear)")  # fmt: skip
    for setting in settings:
        for seed in seeds:
            start = time.time()
            run = train_oracle(
                setting, seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                eval_every=args.eval_every, weight_decay=args.weight_decay,
            )  # fmt: skip
            rows += run
            last = {
                r["target"]: r for r in run if r["step"] == args.steps and r["encoder"] == "hz1"
            }
            invariance = max_style_invariance(
                LatentModel(LatentConfig(seed=seed, **SETTINGS[setting]))
            )
            print(f"{setting:<12} {seed:>4} {invariance:>14.3f} {last['c']['loss_gap']:>10.4f} "
                  f"{last['c']['r2_linear']:>6.2f} {last['s']['r2_linear']:>6.2f} "
                  f"{last['s_tilde']['r2_linear']:>6.2f} {last['m1']['r2_linear']:>6.2f}  "
                  f"({time.time() - start:.0f} s)", flush=True)  # fmt: skip
    write_results_csv(rows, out / "oracle.csv")
    plot(rows, out / "oracle.png")
    print(f"wrote {out / 'oracle.csv'} and {out / 'oracle.png'}")
    return rows


if __name__ == "__main__":
    main()
