"""The pieces of emergence.py: the batched encoder sweep, its alignment and its summaries."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from alignment_common import finish_plot
from alignment_config import EmergenceConfig
from torch import nn

from mm_data.alignment import SyntheticSplits
from mm_models.ensemble import EnsembleMLP

NUM_CLASSES = 4
# the paper's median alignment-performance correlation per U = 0..8 (read off its figure)
PAPER_PERF_CORR = (0.68, 0.68, 0.60, 0.33, 0.27, 0.22, 0.17, 0.00, 0.12)


class MemberClippedAdamW(torch.optim.AdamW):
    """AdamW that first clips each ensemble member's gradient to its own max norm."""

    def __init__(self, groups, ensembles: list[EnsembleMLP], max_norm: float, **kwargs) -> None:
        super().__init__(groups, **kwargs)
        self.ensembles, self.max_norm = ensembles, max_norm

    @torch.no_grad()
    def step(self, closure=None):
        for ensemble in self.ensembles:
            ensemble.clip_member_grad_norm_(self.max_norm)
        return super().step(closure)


class Sweep:
    """Every encoder of the sweep as batched ensembles, with their inputs and labels.

    Modality 1: one member per (seed, U), depth 1. Modality 2: per depth D_enc, one member
    per (seed, U, D_phi). Member e of an ensemble reads its own view and its own label.
    """

    def __init__(self, cfg: EmergenceConfig, data: SyntheticSplits, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device
        us, ds, seeds = list(cfg.uniqueness), list(cfg.dphi), list(cfg.seeds)
        self.x1_members = list(itertools.product(seeds, us))
        self.x2_members = list(itertools.product(seeds, us, ds))
        # inputs per split: x1 [N, 12] shared by all members; x2 [n_dphi, N, 12]; y [n_u, N]
        self.x1 = {s: v.to(device) for s, v in data.x1.items()}
        self.x2 = {s: torch.stack([v[d] for d in ds]).to(device) for s, v in data.x2.items()}
        self.y = {s: torch.stack([v[u] for u in us]).to(device) for s, v in data.y.items()}
        self.x1_u = torch.tensor([us.index(u) for _, u in self.x1_members], device=device)
        self.x2_u = torch.tensor([us.index(u) for _, u, _ in self.x2_members], device=device)
        self.x2_d = torch.tensor([ds.index(d) for _, _, d in self.x2_members], device=device)
        width = cfg.width
        # the paper's init seed: 2 + D_phi + D_enc (per encoder seed)
        model = nn.Module()
        model.x1 = EnsembleMLP([1000 * s + 3 for s, _ in self.x1_members], 12, width, 1,
                               NUM_CLASSES)  # fmt: skip
        model.x2 = nn.ModuleDict({
            str(depth): EnsembleMLP([1000 * s + 2 + d + depth for s, _, d in self.x2_members],
                                    12, width, depth, NUM_CLASSES)
            for depth in cfg.depths
        })  # fmt: skip
        self.model = model.to(device)
        self.num_encoders = len(self.x1_members) + len(self.x2_members) * len(cfg.depths)
        n_train = len(self.x1["train"])
        self.steps_per_epoch = math.ceil(n_train / cfg.batch_size)
        self.steps_x1 = cfg.epochs_x1 * self.steps_per_epoch
        self.steps_x2 = max(cfg.epochs_x2, cfg.epochs_x1) * self.steps_per_epoch
        groups = [
            {"params": list(model.x2.parameters()), "lr": cfg.lr},  # group 0: logged lr
            {"params": list(model.x1.parameters()), "lr": cfg.lr_x1},
        ]
        ensembles = [model.x1, *model.x2.values()]
        self.optimizer = MemberClippedAdamW(
            groups, ensembles, cfg.clip_grad, weight_decay=cfg.weight_decay
        )
        self.steps_x2_own = cfg.epochs_x2 * self.steps_per_epoch

    # ---------------------------------------------------------------- training pieces

    def batch(self, step: int) -> torch.Tensor:
        """Sample indices of optimizer step ``step`` (a fresh permutation per epoch)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(self.x1["train"]), generator=generator)
        b = self.cfg.batch_size
        return order[position * b : (position + 1) * b]

    def _x1_inputs(self, split: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x1[split][idx]
        return x.expand(len(self.x1_members), *x.shape), self.y[split][:, idx][self.x1_u]

    def _x2_inputs(self, split: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x2[split][:, idx][self.x2_d], self.y[split][:, idx][self.x2_u]

    @staticmethod
    def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over members of each member's mean cross-entropy (members stay independent)."""
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        return ce.view(y.shape).mean(dim=1).sum()

    def step_fn(self, model: nn.Module, idx: torch.Tensor):
        idx = idx.to(self.device)
        self._set_rates()
        metrics = {}
        loss = torch.zeros((), device=self.device)
        if self.optimizer.param_groups[1]["lr"] > 0:
            x, y = self._x1_inputs("train", idx)
            loss_x1 = self._loss(model.x1(x), y)
            loss = loss + loss_x1
            metrics["loss_x1"] = loss_x1.detach() / len(self.x1_members)
        if self.optimizer.param_groups[0]["lr"] > 0:
            x, y = self._x2_inputs("train", idx)
            loss_x2 = sum(self._loss(net(x), y) for net in model.x2.values())
            loss = loss + loss_x2
            metrics["loss_x2"] = loss_x2.detach() / (len(self.x2_members) * len(model.x2))
        return loss, metrics

    def _set_rates(self) -> None:
        """Stop a modality at the end of its epochs: lr 0 freezes AdamW exactly (no decay).

        The optimizer's own step count says where the run is (resumed runs included)."""
        first = next(iter(self.model.x1.parameters()))
        done = int(self.optimizer.state[first]["step"]) if first in self.optimizer.state else 0
        groups = self.optimizer.param_groups
        groups[1]["lr"] = self.cfg.lr_x1 if done < self.steps_x1 else 0.0
        groups[0]["lr"] = self.cfg.lr if done < self.steps_x2_own else 0.0

    @torch.no_grad()
    def accuracies(self, split: str) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Per-member accuracy: x1 [members], x2 {depth: [members]}."""
        idx = torch.arange(len(self.x1[split]), device=self.device)
        x, y = self._x1_inputs(split, idx)
        acc1 = (self.model.x1(x).argmax(-1) == y).float().mean(dim=1)
        x, y = self._x2_inputs(split, idx)
        acc2 = {int(k): (net(x).argmax(-1) == y).float().mean(dim=1)
                for k, net in self.model.x2.items()}  # fmt: skip
        return acc1, acc2

    def eval_fn(self, model: nn.Module, step: int) -> dict[str, float]:
        acc1, acc2 = self.accuracies("val")
        return {"val_acc_x1": float(acc1.mean()),
                "val_acc_x2": float(torch.cat(list(acc2.values())).mean())}  # fmt: skip

    def accuracy_rows(self, val) -> list[dict[str, Any]]:
        """One row per encoder: ``val`` is `accuracies("val")` of the trained sweep."""
        rows = []
        val1, val2 = val
        test1, test2 = self.accuracies("test")
        for e, (seed, u) in enumerate(self.x1_members):
            rows.append({"modality": 1, "seed": seed, "u": u, "dphi": "", "depth": 1,
                         "val_acc": float(val1[e]), "test_acc": float(test1[e])})  # fmt: skip
        for depth in self.cfg.depths:
            for e, (seed, u, d) in enumerate(self.x2_members):
                rows.append({"modality": 2, "seed": seed, "u": u, "dphi": d, "depth": depth,
                             "val_acc": float(val2[depth][e]),
                             "test_acc": float(test2[depth][e])})  # fmt: skip
        return rows

    @torch.no_grad()
    def hidden(self) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Post-activation layers on the first align_samples test rows.

        x1: [members, N, 2, width]; x2: {depth: [members, N, depth + 1, width]}.
        """
        idx = torch.arange(self.cfg.align_samples, device=self.device)
        x, _ = self._x1_inputs("test", idx)
        h1 = torch.stack(self.model.x1.hidden(x), dim=2)
        x, _ = self._x2_inputs("test", idx)
        h2 = {int(k): torch.stack(net.hidden(x), dim=2) for k, net in self.model.x2.items()}
        return h1.cpu(), {k: v.cpu() for k, v in h2.items()}


# ----------------------------------------------------------------------- alignment


def measure_alignment(cfg: EmergenceConfig, sweep: Sweep, val) -> list[dict[str, Any]]:
    """Best-layer-pair alignment of each modality-2 encoder with its modality-1 partner
    (``val``: `Sweep.accuracies("val")`, recorded beside each pair)."""
    from mm_eval.alignment import layer_alignment

    h1, h2 = sweep.hidden()
    acc1, acc2 = val
    partner = {member: e for e, member in enumerate(sweep.x1_members)}
    rows = []
    for metric in cfg.metrics:
        kwargs = {"topk": cfg.topk} if "knn" in metric else {"eps": 0.0, "clip_hsic": True}
        for depth in cfg.depths:
            for e, (seed, u, d) in enumerate(sweep.x2_members):
                p = partner[(seed, u)]
                result = layer_alignment(h1[p], h2[depth][e], metric, q=1.0, **kwargs)
                la, lb = result.best_layers
                rows.append({"metric": metric, "seed": seed, "u": u, "dphi": d, "depth": depth,
                             "alignment": result.best, "layer_x1": la, "layer_x2": lb,
                             "val_acc_x1": float(acc1[p]),
                             "val_acc_x2": float(acc2[depth][e])})  # fmt: skip
    return rows


def _corr(x: list[float], y: list[float], kind: str) -> float:
    from scipy import stats

    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    fn = stats.spearmanr if kind == "spearman" else stats.pearsonr
    return float(fn(x, y)[0])


def max_alignment(rows, metric: str, seed: int, u: int, d: int) -> float:
    """The encoder pair's alignment maximised over modality-2 depths (and layer pairs)."""
    return max(r["alignment"] for r in rows
               if (r["metric"], r["seed"], r["u"], r["dphi"]) == (metric, seed, u, d))  # fmt: skip


def summarise(cfg: EmergenceConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat summary: rho of max alignment vs U per (metric, D_phi), and the per-U
    alignment-performance correlation across modality-2 depths."""
    us = list(cfg.uniqueness)
    summary: dict[str, Any] = {}
    for metric in cfg.metrics:
        for d in cfg.dphi:
            per_seed = {s: [max_alignment(rows, metric, s, u, d) for u in us] for s in cfg.seeds}
            mean = [statistics.fmean(per_seed[s][i] for s in cfg.seeds) for i in range(len(us))]
            key = f"{metric}_dphi{d}"
            summary[f"rho_{key}"] = _corr(mean, us, "spearman")
            summary[f"pearson_{key}"] = _corr(mean, us, "pearson")
            seed_rhos = [_corr(per_seed[s], us, "spearman") for s in cfg.seeds]
            summary[f"rho_{key}_seed_mean"] = statistics.fmean(seed_rhos)
            for u, value in zip(us, mean):
                summary[f"max_{key}_u{u}"] = value
        if len(cfg.depths) >= 3:
            for u in us:
                corrs = []
                for d, s in itertools.product(cfg.dphi, cfg.seeds):
                    group = [r for r in rows
                             if (r["metric"], r["seed"], r["u"], r["dphi"]) == (metric, s, u, d)]  # fmt: skip
                    corrs.append(_corr([r["alignment"] for r in group],
                                       [r["val_acc_x2"] for r in group], "pearson"))  # fmt: skip
                finite = [c for c in corrs if not math.isnan(c)]
                summary[f"perf_corr_{metric}_u{u}"] = (
                    statistics.median(finite) if finite else float("nan")
                )
    return summary


# ------------------------------------------------------------------------- outputs


def write_outputs(cfg, out: Path, accuracy, alignment, summary) -> None:
    from mm_eval.identifiability import write_results_csv

    write_results_csv(accuracy, out / "accuracy.csv")
    write_results_csv(alignment, out / "alignment.csv")
    plot_alignment_vs_u(cfg, alignment, out / "alignment_vs_u.png")
    if len(cfg.depths) >= 3:
        plot_perf_corr(cfg, summary, out / "alignment_vs_perf.png")


def plot_alignment_vs_u(cfg, rows, path: Path) -> None:
    """Max alignment vs U per D_phi, one panel per metric, standard error over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    us = list(cfg.uniqueness)
    fig, axes = plt.subplots(1, len(cfg.metrics), figsize=(4.6 * len(cfg.metrics), 3.4))
    for ax, metric in zip(np.atleast_1d(axes), cfg.metrics):
        for d in cfg.dphi:
            values = np.array([[max_alignment(rows, metric, s, u, d) for u in us]
                               for s in cfg.seeds])  # fmt: skip
            sem = values.std(axis=0, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else None
            ax.errorbar(us, values.mean(axis=0), yerr=sem, marker="o", capsize=3,
                        label=f"D_phi = {d}")  # fmt: skip
        ax.set_xlabel("uniqueness U (label bits unique to a modality)")
        ax.set_ylabel(f"max {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    finish_plot(fig, axes.flat[0] if hasattr(axes, "flat") else axes, path, legend=False)


def plot_perf_corr(cfg, summary, path: Path) -> None:
    """Median Pearson correlation of alignment with modality-2 accuracy across depths, per U."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    us = list(cfg.uniqueness)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for metric in cfg.metrics:
        ax.plot(us, [summary[f"perf_corr_{metric}_u{u}"] for u in us], "o-", label=metric)
    ax.plot(range(9), PAPER_PERF_CORR, "k--", alpha=0.6, label="paper (unbiased CKA)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("uniqueness U")
    ax.set_ylabel("corr(alignment, accuracy) over depths")
    finish_plot(fig, ax, path)
