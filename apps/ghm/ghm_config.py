"""The GHM app's configs (train.py and eval.py flags), importable without torch.

`--help` and every config error come from here, before torch and the models are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mm_train import RunOptions, arg, load_config

Task = Literal["clip", "dns", "sdns", "nwp", "snwp"]
DATA_TASK = {"clip": "clip", "dns": "dns", "sdns": "dns", "nwp": "nwp", "snwp": "nwp"}


@dataclass
class GHMAppConfig(RunOptions):
    """Every field is a --flag of train.py; presets (TOML) set groups of them."""

    out: str = arg("runs/ghm", "run directory (config, metrics, checkpoints)", may_change=True)
    task: Task = arg("clip", "clip | dns | sdns | nwp | snwp")
    attention: Literal["softmax", "relu"] = arg("softmax", "attention activation")
    variant: Literal["standard", "shallow", "guided"] = arg("standard", "model variant")
    p: float = arg(0.2, "flip probability of the transitions", ge=0, le=1)
    n_layer: int = arg(4, "tree levels below the root", ge=1)
    n_child: int = arg(3, "children per node", ge=1)
    vocab: int = arg(10, "values a node can take", ge=2)
    tree_seed: int = arg(42, "seed of the tree (permutations and noise matrices)")
    sigma: float = arg(1.0, "noise std of the denoising tasks", gt=0)
    num_negatives: int = arg(4, "K: candidates per CLIP anchor (1 positive, K-1 negatives)", ge=2)
    d_model: int = arg(0, "transformer width; 0 = the paper's width for the task", ge=0)
    depth: int = arg(0, "transformer blocks; 0 = the paper's depth for task and variant", ge=0)
    n_head: int = arg(1, "attention heads", ge=1)
    embed_std: float = arg(
        1.0, "init std of token/position embeddings (0.02 = nanoGPT's; slower)", gt=0
    )
    guided_lambda: float = arg(
        0.0, "weight of the guided penalty (variant guided); 0 = paper value", ge=0
    )
    clip_run: str = arg("", "run directory of a trained clip run (sdns/snwp)")
    steps: int = arg(3000, "optimizer steps (fresh samples every step)", ge=1, may_change=True)
    batch_size: int = arg(
        128, "samples per step per process (global batch = this x processes)", ge=1
    )
    lr: float = arg(0.0, "peak learning rate; 0 = the paper's value for task and variant", ge=0)
    weight_decay: float = arg(1e-3, "decoupled weight decay of AdamW", ge=0)
    clip_grad: float = arg(1.0, "gradient-norm clipping", gt=0)
    risk_window: int = arg(100, "risk = mean of the last N training losses", ge=1)
    bayes_samples: int = arg(10_000, "fresh samples for the Bayes risk", ge=1)
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0, may_change=True)
    amp: Literal["off", "bf16", "fp16"] = arg("off", "autocast on CUDA")
    log_every: int = arg(50, "steps between metrics.jsonl lines", ge=1, may_change=True)
    checkpoint_every: int = arg(500, "steps between checkpoints", ge=1, may_change=True)
    keep_last: int = arg(2, "checkpoints kept", ge=1, may_change=True)

    def validate(self) -> None:
        """Checks that involve more than one flag (ranges are checked per field)."""
        if self.task in ("sdns", "snwp"):
            if not self.clip_run:
                raise ValueError(
                    f"--task {self.task} needs --clip-run: the directory of a trained clip run"
                )
            clip_run_config(self)
        if self.variant == "guided" and self.task not in GUIDED_TASKS:
            raise ValueError(
                f"--variant guided applies to the tasks with a full token sequence "
                f"{GUIDED_TASKS}, not --task {self.task}: its frozen CLIP embedding is one "
                "token, which has no tree levels to match"
            )


# The training hyperparameters, each with its source. "paper": the paper's appendix and
# the authors' training scripts; "ours": chosen by this project where the paper gives none.
# (Model widths and depths per task and variant: mm_models.ghm.presets.)
HYPERPARAMETERS: dict[str, tuple[object, str]] = {
    "lr clip standard/shallow": (3e-4, "paper"),
    "lr clip guided": (1e-3, "paper"),
    "lr dns standard/shallow": (1e-3, "paper"),
    "lr dns guided": (1e-2, "paper"),
    "lr nwp standard/shallow": (3e-4, "paper"),
    "lr nwp guided": (1e-3, "paper"),
    "lr sdns/snwp": (1e-3, "paper"),
    "guided penalty weight dns": (0.1, "paper"),
    "guided penalty weight nwp": (1e-3, "paper"),
    "guided penalty weight clip": (0.1, "ours (the paper gives no CLIP weight; dns's value)"),
    "optimizer": ("AdamW (0.9, 0.999), eps 1e-8, weight decay 1e-3", "paper"),
    "schedule": ("cosine from lr to lr/1000, no warmup", "paper"),
    "gradient clipping": (1.0, "paper"),
    "global batch": (128, "paper"),
    "steps": ("clip 3,000-40,000; dns/nwp 30,000", "paper"),
}
GUIDED_TASKS = ("clip", "dns", "nwp")


def _hp(name: str) -> float:
    return float(HYPERPARAMETERS[name][0])  # type: ignore[arg-type]


PAPER_LR = {
    (task, variant): _hp(f"lr {task} {'guided' if variant == 'guided' else 'standard/shallow'}")
    for task in GUIDED_TASKS
    for variant in ("standard", "shallow", "guided")
}
SEQUENTIAL_LR = _hp("lr sdns/snwp")
GUIDED_LAMBDA = {task: _hp(f"guided penalty weight {task}") for task in GUIDED_TASKS}


def clip_run_config(cfg: GHMAppConfig) -> GHMAppConfig:
    """The config of `cfg.clip_run`: a clip run on a tree of `cfg`'s shape (else ValueError)."""
    run = Path(cfg.clip_run)
    clip_cfg = run_config(run, "--clip-run")
    if clip_cfg.task != "clip":
        raise ValueError(f"--clip-run {run}: task is {clip_cfg.task!r}, expected 'clip'")
    for key in ("n_layer", "n_child", "vocab"):
        if getattr(clip_cfg, key) != getattr(cfg, key):
            raise ValueError(
                f"--clip-run {run}: the clip run has {key}={getattr(clip_cfg, key)}, this run "
                f"has {key}={getattr(cfg, key)}; the tree shapes must match"
            )
    return clip_cfg


@dataclass
class EvalConfig:
    """Flags of eval.py; the tree fields default to the training defaults."""

    bayes: bool = arg(False, "Bayes risk of --task at --p")
    run: str = arg(
        "",
        "a train.py run: its held-out risk against exact BP (dns: MSE to the BP "
        "posterior mean; nwp: KL to the BP next-token posterior)",
    )
    zero_shot: bool = arg(False, "zero-shot risk vs M of --run (a clip run)")
    ood: bool = arg(False, "OOD sweep of --run over --p-values, with misspecified BP")
    compare: tuple[str, ...] = arg(
        (), "runs of --run's task and tree to score against it on the same samples"
    )
    task: Literal["clip", "zsc", "dns", "nwp"] = arg("clip", "Bayes task")
    p: float = arg(0.2, "flip probability (Bayes mode)", ge=0, le=1)
    n_layer: int = arg(4, "tree levels below the root", ge=1)
    n_child: int = arg(3, "children per node", ge=1)
    vocab: int = arg(10, "values a node can take", ge=2)
    tree_seed: int = arg(42, "seed of the tree")
    sigma: float = arg(1.0, "noise std of denoising", gt=0)
    num_negatives: int = arg(4, "K of the CLIP loss", ge=2)
    samples: int = arg(10_000, "fresh samples per evaluated quantity", ge=2)
    m_values: tuple[int, ...] = arg((5, 10, 25, 50, 100, 250), "prompts per class", ge=1)
    p_values: tuple[float, ...] = arg(
        (0.02, 0.1, 0.2, 0.3, 0.4), "test flip probabilities", ge=0, le=1
    )
    batch_size: int = arg(500, "evaluation batch size", ge=1)
    out: str = arg("runs/ghm-eval", "output directory")
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device")
    seed: int = arg(1, "seed of the evaluation samples")

    def validate(self) -> None:
        """At least one evaluation, and a run for those that need one."""
        if not (self.bayes or self.run):
            raise ValueError("nothing to do; pass --bayes, or --run DIR (a train.py run)")
        if (self.zero_shot or self.ood or self.compare) and not self.run:
            raise ValueError(
                "--zero-shot, --ood and --compare evaluate a trained run; pass --run DIR"
            )
        if not self.run:
            return
        run_cfg = run_config(self.run, "--run")
        if self.zero_shot and run_cfg.task != "clip":
            raise ValueError(
                f"--zero-shot needs a clip run; --run {self.run} is a {run_cfg.task} run"
            )
        for other in self.compare:
            other_cfg = run_config(other, "--compare")
            for name in ("task", *TREE_FIELDS):
                if getattr(other_cfg, name) != getattr(run_cfg, name):
                    raise ValueError(
                        f"--compare {other}: {name}={getattr(other_cfg, name)}, but --run "
                        f"{self.run} has {name}={getattr(run_cfg, name)}; compare runs of one tree"
                    )


# what must agree for two runs to be scored on the same samples
TREE_FIELDS = ("n_layer", "n_child", "vocab", "p", "tree_seed", "num_negatives", "sigma")


def run_config(run: str | Path, flag: str) -> GHMAppConfig:
    """The saved config of a train.py run directory (ValueError naming `flag` if none)."""
    config_path = Path(run) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{flag} {run} has no config.json; is it a train.py output directory?")
    return load_config(GHMAppConfig, config_path)
