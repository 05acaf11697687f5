"""The pieces of clip_finetune.py: MM-IMDb pairs, the two-tower model with a text head, the
BCE + clip_weight x InfoNCE objective, the text-feature probe, and the trial sweep."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from alignment_common import MINIATURE_MOVIES, fail, finish_plot
from alignment_config import FinetuneConfig
from torch import nn

HERE = Path(__file__).resolve().parent
TOKENIZER_DIR, MODEL_DIR, PROBE_FILE = "tokenizer", "model", "probe.json"
TINY_TEXT = {"dim": 64, "n_layers": 2, "n_heads": 2, "hidden_dim": 128}
PROBE_CS = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------ data


def transforms(size: int):
    """(train, eval): RandomResizedCrop(size, 0.5-1) / Resize + CenterCrop; ImageNet mean/std."""
    import torchvision.transforms as T

    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train = T.Compose([T.RandomResizedCrop(size, scale=(0.5, 1.0)), *norm])
    test = T.Compose([T.Resize(size), T.CenterCrop(size), *norm])
    return train, test


class Pairs(torch.utils.data.Dataset):
    """Movies of MM-IMDb as (image, caption, binary label) with label -1 for unlabelled ones."""

    def __init__(self, data, labels: torch.Tensor) -> None:
        self.data, self.labels = data, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.data[i]
        return {"image": item["image"], "caption": item["caption"], "label": self.labels[i]}


def ensure_data(cfg: FinetuneConfig) -> Path:
    """The data root; a generated MM-IMDb miniature is written there when it is absent."""
    from mm_data.alignment import write_miniature

    root = Path(cfg.data_root)
    if not root.exists():
        print(f"[clip_finetune] writing a generated MM-IMDb miniature to {root}", flush=True)
        write_miniature(root, per_split=MINIATURE_MOVIES, seed=0)
    return root


def load_splits(cfg: FinetuneConfig, train_tf, eval_tf) -> dict[str, Any]:
    """train (labelled + unlabelled), dev and test of the config (generated when absent)."""
    from mm_data.alignment import MMIMDb

    root = ensure_data(cfg)
    try:
        full = MMIMDb(root, "train", transform=train_tf)
        n_lab = cfg.train_ids or len(full)
        if n_lab + cfg.unlabeled > len(full):
            fail(f"--train-ids {n_lab} + --unlabeled {cfg.unlabeled} exceed the {len(full)} "
                 f"usable train movies of {root}")  # fmt: skip
        train = full.head(n_lab + cfg.unlabeled if cfg.clip_weight > 0 else n_lab)
        evals = {}
        for split in ("dev", "test"):
            data = MMIMDb(root, split, transform=eval_tf)
            evals[split] = data.head(cfg.eval_ids or len(data))
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    labels = train.labels[:, cfg.class_idx].clone()
    labels[n_lab:] = -1.0  # the unlabelled pairs (contrastive term only)
    return {"train": Pairs(train, labels), "train_labelled": train, "n_labelled": n_lab, **evals}


class Collate:
    def __init__(self, tokenizer, max_tokens: int) -> None:
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def __call__(self, items):
        tokens = self.tokenizer([i["caption"] for i in items], padding="max_length",
                                truncation=True, max_length=self.max_tokens, return_tensors="pt")  # fmt: skip
        return {"images": torch.stack([i["image"] for i in items]),
                "input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
                "labels": torch.stack([torch.as_tensor(i["label"]) for i in items]).float()}  # fmt: skip


# ----------------------------------------------------------------------------------- model


class TwoTowerWithHead(nn.Module):
    """The dual encoder, a Linear(embed_dim, 1) head on the normalised text embedding, and
    the InfoNCE loss with its learnable temperature (log scale init log(1/0.07), tau >= 0.01)."""

    def __init__(self, encoder: nn.Module, embed_dim: int) -> None:
        super().__init__()
        import mm_losses

        self.encoder = encoder
        self.head = nn.Linear(embed_dim, 1)
        self.contrastive = mm_losses.build("clip", tau=0.07, temperature="learnable",
                                           tau_min=0.01, tau_max=1.0)  # fmt: skip

    def text_features(self, input_ids, attention_mask) -> torch.Tensor:
        return F.normalize(self.encoder.encode_text(input_ids, attention_mask), dim=-1)

    def forward(self, batch: dict[str, torch.Tensor], clip_weight: float):
        image, text = self.encoder(batch["images"], batch["input_ids"], batch["attention_mask"])
        logits = self.head(F.normalize(text, dim=-1)).squeeze(-1)
        labels = batch["labels"]
        labelled = labels >= 0
        bce = (F.binary_cross_entropy_with_logits(logits[labelled], labels[labelled])
               if labelled.any() else logits.sum() * 0.0)  # fmt: skip
        metrics = {"bce": bce.detach()}
        loss = bce
        if clip_weight > 0:
            nce = self.contrastive(image, text)
            loss = loss + clip_weight * nce
            metrics["infonce"] = nce.detach()
        return loss, metrics


def build_model(cfg: FinetuneConfig, vocab_size: int) -> TwoTowerWithHead:
    from mm_models.dual_encoder import DualEncoder, DualEncoderConfig

    image_kwargs: dict[str, Any] = {"img_size": cfg.image_size}
    for key, value in (("patch_size", cfg.image_patch), ("depth", cfg.image_depth),
                       ("embed_dim", cfg.image_width)):  # fmt: skip
        if value:
            image_kwargs[key] = value
    if cfg.image_width:
        image_kwargs["num_heads"] = max(1, cfg.image_width // 32)
    text = ({**TINY_TEXT, "vocab_size": vocab_size, "max_position_embeddings": cfg.max_tokens}
            if cfg.text_model == "tiny" else cfg.text_model)  # fmt: skip
    config = DualEncoderConfig(image_model=cfg.image_model, image_weights=cfg.image_weights or None,
                               image_size=cfg.image_size, text_model=text, embed_dim=cfg.embed_dim,
                               normalize=False, image_kwargs=image_kwargs)  # fmt: skip
    return TwoTowerWithHead(DualEncoder(config), cfg.embed_dim)


# ----------------------------------------------------------------------------------- probe


@torch.no_grad()
def text_features(model: TwoTowerWithHead, data, collate, device, batch_size=128) -> torch.Tensor:
    feats = []
    for start in range(0, len(data), batch_size):
        captions = data.captions[start : start + batch_size]
        tokens = collate.tokenizer(captions, padding="max_length", truncation=True,
                                   max_length=collate.max_tokens, return_tensors="pt")  # fmt: skip
        feats.append(model.text_features(tokens["input_ids"].to(device),
                                         tokens["attention_mask"].to(device)).cpu())  # fmt: skip
    return torch.cat(feats)


def probe_f1(train_x, train_y, dev_x, dev_y, test_x, test_y) -> dict[str, Any]:
    """LogisticRegression on text features: C chosen on dev macro-F1, refit on train + dev,
    scored by test macro-F1 (a single-class training set gives the majority rule)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    def fit(x, y, c):
        if len(set(y.tolist())) < 2:
            return None
        with warnings.catch_warnings():  # max_iter 100 is the recipe's; large C stops early
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LogisticRegression(C=c, max_iter=100).fit(x, y)

    def predict(model, x, y_train):
        if model is None:
            return np.full(len(x), int(y_train[0]) if len(y_train) else 0)
        return model.predict(x)

    dev_scores = {}
    for c in PROBE_CS:
        model = fit(train_x, train_y, c)
        dev_scores[c] = f1_score(dev_y, predict(model, dev_x, train_y), average="macro",
                                 zero_division=0)  # fmt: skip
    best = max(PROBE_CS, key=lambda c: (dev_scores[c], -abs(math.log10(c))))
    both_x, both_y = np.concatenate([train_x, dev_x]), np.concatenate([train_y, dev_y])
    model = fit(both_x, both_y, best)
    test = f1_score(test_y, predict(model, test_x, both_y), average="macro", zero_division=0)
    return {"probe_C": best, "dev_f1": float(dev_scores[best]), "test_f1": float(test),
            "dev_f1_per_C": {str(c): float(v) for c, v in dev_scores.items()}}  # fmt: skip


# ----------------------------------------------------------------------------------- sweep


def trial_name(weight: float) -> str:
    return f"cw{weight:g}"


def trial_command(cfg: FinetuneConfig, weight: float, sweep_dir: Path) -> list[str]:
    """The clip_finetune.py command of one trial (its config saved beside the trials)."""
    from mm_train import config_to_dict

    trial_dir = sweep_dir / trial_name(weight)
    config = {**config_to_dict(cfg), "clip_weight": weight, "out": str(trial_dir), "sweep": [],
              "resume": False, "overwrite": False,
              "threads": max(1, int(cfg.trial_cpus))}  # fmt: skip
    config_file = sweep_dir / "trials" / f"{trial_name(weight)}.json"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(config, indent=1), encoding="utf-8")
    command = [sys.executable, str(HERE / "clip_finetune.py"), "--config", str(config_file)]
    if (trial_dir / "config.json").is_file():
        command.append("--resume")  # an interrupted trial continues
    return command


def _launch(command: list[str], log: str) -> int:
    """Run one trial's command, its output to ``log``; the exit status."""
    import subprocess

    with open(log, "a", encoding="utf-8") as handle:
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode


def run_sweep(cfg: FinetuneConfig) -> dict[str, Any]:
    """One trial per clip weight, finished trials skipped; on Ray (parallel) or here."""
    from mm_eval.identifiability import write_results_csv
    from mm_train import atomic_write_json, config_to_dict

    sweep_dir = Path(cfg.out)
    base = {k: v for k, v in config_to_dict(cfg).items()
            if k not in ("sweep", "clip_weight", "out", "resume", "overwrite", "launcher",
                         "ray_address", "ray_cpus", "trial_cpus", "trial_gpus", "threads",
                         "workers", "log_every", "keep_last", "loggers", "device")}  # fmt: skip
    record = sweep_dir / "sweep.json"
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))["base"]
        if saved != base and not cfg.overwrite:
            changed = sorted(k for k in base if saved.get(k) != base[k])
            fail(f"--out {sweep_dir} holds a sweep of another configuration ({', '.join(changed)}"
                 "); use another --out")  # fmt: skip
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, {"base": base, "weights": list(cfg.sweep)})
    ensure_data(cfg)  # once, before parallel trials could each start writing it
    done = {w for w in cfg.sweep if (sweep_dir / trial_name(w) / "summary.json").is_file()}
    pending = [w for w in cfg.sweep if w not in done]
    if done:
        print(
            f"[sweep] {len(done)} of {len(cfg.sweep)} trials finished before: skipped", flush=True
        )
    commands = {w: trial_command(cfg, w, sweep_dir) for w in pending}
    logs = {w: str(sweep_dir / "trials" / f"{trial_name(w)}.log") for w in pending}
    started = time.perf_counter()
    if pending and cfg.launcher == "ray":
        codes = _run_on_ray(cfg, commands, logs, started)
    else:
        codes = {}
        for k, w in enumerate(pending, 1):
            codes[w] = _launch(commands[w], logs[w])
            _report(k, len(pending), w, codes[w], started)
    failed = [w for w, code in codes.items() if code != 0]
    if failed:
        fail(f"trials {failed} failed; their logs: {', '.join(logs[w] for w in failed)}")
    rows = []
    for w in cfg.sweep:
        summary = json.loads((sweep_dir / trial_name(w) / "summary.json").read_text())
        rows.append({"clip_weight": w, "test_f1": summary["test_f1"], "dev_f1": summary["dev_f1"],
                     "probe_C": summary["probe_C"], "steps": summary["steps"],
                     "train_seconds": summary["train_seconds"]})  # fmt: skip
    write_results_csv(rows, sweep_dir / "sweep.csv")
    plot_sweep(rows, sweep_dir / "sweep.png")
    result = {f"test_f1_{trial_name(r['clip_weight'])}": r["test_f1"] for r in rows}
    result["trials"] = len(rows)
    atomic_write_json(sweep_dir / "summary.json", result)
    for r in rows:
        print(f"clip_weight {r['clip_weight']:g}: test macro-F1 {r['test_f1']:.3f} "
              f"(dev {r['dev_f1']:.3f}, C {r['probe_C']:g})")  # fmt: skip
    return result


def _report(k: int, total: int, weight: float, code: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    eta = elapsed / k * (total - k)
    state = "done" if code == 0 else f"FAILED (exit {code})"
    print(f"[sweep] trial clip_weight={weight:g} {state}: {k}/{total}, elapsed "
          f"{elapsed:.0f} s, eta {eta:.0f} s", flush=True)  # fmt: skip


def _run_on_ray(cfg: FinetuneConfig, commands, logs, started) -> dict[float, int]:
    """Each pending trial as a Ray task (trial_cpus / trial_gpus each), results as they end."""
    import os

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # trials use this interpreter
    # Ray starts its workers at nice 15; a trial is the real work, so it keeps normal priority
    # (measured: a trial beside two busy processes on 2 cores ran 40x slower niced)
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    # the workers import this module (by its folder) to run _launch
    runtime_env = {"env_vars": {"PYTHONPATH": str(HERE), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}}
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=cfg.ray_cpus or None, include_dashboard=False, log_to_driver=False,
                 runtime_env=runtime_env)  # fmt: skip
    try:
        remote = ray.remote(_launch).options(num_cpus=cfg.trial_cpus, num_gpus=cfg.trial_gpus)
        futures = {remote.remote(commands[w], logs[w]): w for w in commands}
        codes: dict[float, int] = {}
        pending = list(futures)
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            weight = futures[finished[0]]
            codes[weight] = ray.get(finished[0])
            _report(len(codes), len(futures), weight, codes[weight], started)
        return codes
    finally:
        ray.shutdown()


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    weights = [r["clip_weight"] for r in rows]
    ax.plot(weights, [r["test_f1"] for r in rows], "o-", label="test macro-F1")
    ax.plot(weights, [r["dev_f1"] for r in rows], "s--", alpha=0.7, label="dev macro-F1")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("clip_weight (InfoNCE weight)")
    ax.set_ylabel("text-probe macro-F1")
    finish_plot(fig, ax, path)
