"""The gridvlm app's configs (train.py, eval.py and probe.py flags), importable without
torch: `--help` and every config error answer before the models load.

One config describes the whole pipeline; ``--stage`` picks the stage a train.py call runs,
and each stage writes its own directory ``--out/<stage>/`` (config.json, checkpoints,
summary.json) under the run rules of mm_train. The options of each stage live in their own
group (``--pretrain.*``, ``--sft.*``, ``--vision.*``, ``--vlm.*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mm_train import RunOptions, arg, flag

Stage = Literal["pretrain", "sft", "vision", "vlm"]
STAGES: tuple[str, ...] = Stage.__args__
# what each stage reads: the directory of an earlier stage that must hold a finished run
NEEDS: dict[str, tuple[str, ...]] = {
    "pretrain": (),
    "sft": ("pretrain",),
    "vision": (),
    "vlm": ("sft", "vision"),  # the onehot encoder needs only sft
}


@dataclass
class GridDataOptions:
    """The grid corpus (generated once under ``root``, then re-read)."""

    root: str = arg("data/gridvlm", "corpus directory (written on first use)")
    config: str = arg("v3", "grid config: v3 (3x3, subset 5, 9 questions), v2 (5x5), ...")
    subset_size: int = arg(0, "objects drawn per grid (0 = the grid config's)", ge=0)
    source: Literal["digits", "sprites", "cifar10"] = arg(
        "digits", "object pictures: scikit-learn digits (offline), procedural sprites, CIFAR-10"
    )
    source_root: str = arg("", "directory of the CIFAR-10 python batches (--data.source cifar10)")
    text_train: int = arg(20_000, "text grids for LM pre-training and SFT", ge=1)
    image_train: int = arg(5_000, "image grids for the vision tower and the VLM", ge=1)
    val: int = arg(250, "validation grids (text and image)", ge=1)
    test: int = arg(250, "test grids", ge=1)
    cell_px: int = arg(16, "side of one cell's picture", ge=4)
    gap_px: int = arg(2, "black gap between cells", ge=0)
    canvas_px: int = arg(54, "side of the grid image", ge=8)
    seed: int = arg(0, "corpus seed")


@dataclass
class LMOptions:
    """The language model (from a config), byte-level BPE trained on the corpus."""

    family: Literal["gptj", "gpt2"] = arg(
        "gptj", "gptj (rotary positions, the original's family) or gpt2 (learned positions)"
    )
    n_layer: int = arg(2, "transformer blocks", ge=1)
    n_embd: int = arg(64, "width", ge=8)
    n_head: int = arg(2, "attention heads", ge=1)
    init_std: float = arg(0.02, "standard deviation of the initial weights", gt=0)
    vocab_size: int = arg(512, "BPE vocabulary size", ge=300)
    max_length: int = arg(256, "longest token sequence (context)", ge=16)
    bos: bool = arg(
        False,
        "start every sequence with <|endoftext|> (the tokenizer adds it): a fixed first "
        "position for the rotary LM (tried for the pre-training jump; see the README)",
    )


@dataclass
class PretrainOptions:
    """Stage pretrain: next-token loss on every (non-padding) token of the text grids."""

    lr: float = arg(3e-3, "AdamW peak learning rate", gt=0)
    epochs: int = arg(4, "epochs over the text grids", ge=1, may_change=True)
    batch_size: int = arg(32, "sequences per step per process", ge=1)
    warmup_steps: int = arg(100, "linear warmup", ge=0)
    weight_decay: float = arg(0.05, "AdamW weight decay", ge=0)


@dataclass
class SFTOptions:
    """Stage sft: from the pre-trained LM, loss on the answers only (or the original's)."""

    lr: float = arg(1e-4, "AdamW peak learning rate", gt=0)
    epochs: int = arg(1, "epochs", ge=1, may_change=True)
    batch_size: int = arg(32, "sequences per step per process", ge=1)
    warmup_steps: int = arg(20, "linear warmup", ge=0)
    loss_on: Literal["answers", "all_but_questions"] = arg(
        "answers",
        "answers: loss on the answer tokens only; all_but_questions: the original's masking "
        "(grid rows and instruction in the loss, question text masked)",
    )


@dataclass
class VisionOptions:
    """Stage vision: a small ViT image tower trained CLIP-style on grid images vs their rows."""

    patch_px: int = arg(9, "ViT patch side (canvas / patch = patch-grid side)", ge=2)
    depth: int = arg(4, "ViT blocks", ge=1)
    width: int = arg(128, "ViT width", ge=8)
    heads: int = arg(4, "ViT attention heads", ge=1)
    embed_dim: int = arg(128, "joint embedding dimension", ge=8)
    tau: float = arg(0.05, "CLIP temperature", gt=0)
    lr: float = arg(3e-4, "AdamW peak learning rate (1e-3 collapsed here)", gt=0)
    epochs: int = arg(6, "epochs over the image grids", ge=1, may_change=True)
    batch_size: int = arg(64, "pairs per step per process", ge=2)
    warmup_steps: int = arg(50, "linear warmup", ge=0)


@dataclass
class VLMOptions:
    """Stage vlm: [projected image tokens] + text, loss on the answers; LM from sft."""

    encoder: Literal["clip", "onehot"] = arg(
        "clip",
        "clip: the vision stage's ViT tokens; onehot: one token per cell holding its class "
        "(the vision-token ablation)",
    )
    onehot_positions: bool = arg(
        False,
        "onehot: append each cell's position one-hot to its token (class + where, as a ViT "
        "token carries)",
    )
    projector: Literal["linear", "mlp"] = arg("linear", "projector from encoder to LM width")
    lr: float = arg(5e-3, "projector learning rate (the base rate)", gt=0)
    lr_scale_lm: float = arg(
        0.5, "LM learning rate = lr x this (the original: 2e-3, at 100k grids x 5 epochs)", ge=0
    )
    lr_scale_vision: float = arg(0.0, "vision learning rate = lr x this", ge=0)
    freeze_lm: bool = arg(False, "keep the language model fixed")
    freeze_vision: bool = arg(True, "keep the vision encoder fixed")
    epochs: int = arg(6, "epochs over the image grids", ge=1, may_change=True)
    batch_size: int = arg(32, "sequences per step per process", ge=1)
    warmup_steps: int = arg(25, "linear warmup", ge=0)
    grids: str = arg(
        "",
        "grid config of the VLM's training grids ('' = --data.config); the ablations use qa3 "
        "vs images_third (#images vs #QA per image) and single_instruction",
    )


@dataclass
class GridVLMConfig(RunOptions):
    """Every field is a --flag of train.py; presets (TOML) set groups of them."""

    out: str = arg("runs/gridvlm", "run directory; each stage writes OUT/<stage>/", may_change=True)
    seed: int = arg(0, "seed")
    stage: Stage = arg("pretrain", "stage to run: pretrain -> sft; vision; then vlm")
    tag: str = arg("", "variant name: the stage writes OUT/<stage>-<tag>/ (e.g. vlm-onehot)")
    data: GridDataOptions = arg(default_factory=GridDataOptions)
    lm: LMOptions = arg(default_factory=LMOptions)
    pretrain: PretrainOptions = arg(default_factory=PretrainOptions)
    sft: SFTOptions = arg(default_factory=SFTOptions)
    vision: VisionOptions = arg(default_factory=VisionOptions)
    vlm: VLMOptions = arg(default_factory=VLMOptions)
    eval_grids: int = arg(100, "validation grids decoded at each evaluation", ge=1)
    eval_every: int = arg(
        0, "steps between evaluations (0 = at the end of every epoch)", ge=0, may_change=True
    )
    log_every: int = arg(50, "steps between metrics.jsonl lines", ge=1, may_change=True)
    keep_last: int = arg(2, "checkpoints kept (one per epoch)", ge=1, may_change=True)
    workers: int = arg(0, "DataLoader worker processes", ge=0, may_change=True)
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0, may_change=True)

    def validate(self) -> None:
        """Checks across fields (before anything is written)."""
        d = self.data
        if d.source == "cifar10" and not d.source_root:
            raise ValueError("--data.source cifar10 needs --data.source-root (the python batches)")
        if d.source_root and not Path(d.source_root).is_dir():
            raise ValueError(f"--data.source-root {d.source_root} is not a directory")
        if self.lm.n_embd % self.lm.n_head:
            raise ValueError(
                f"--lm.n-embd {self.lm.n_embd} is not a multiple of --lm.n-head {self.lm.n_head}"
            )
        if self.vision.width % self.vision.heads:
            raise ValueError(
                f"--vision.width {self.vision.width} is not a multiple of --vision.heads "
                f"{self.vision.heads}"
            )
        if self.vlm.onehot_positions and self.vlm.encoder != "onehot":
            raise ValueError(
                f"{flag('vlm.onehot_positions')} needs {flag('vlm.encoder')} onehot, "
                f"got {self.vlm.encoder}"
            )
        if d.canvas_px % self.vision.patch_px:
            raise ValueError(
                f"{flag('data.canvas_px')} {d.canvas_px} is not a multiple of "
                f"{flag('vision.patch_px')} {self.vision.patch_px}"
            )


@dataclass
class EvalConfig:
    """Flags of eval.py."""

    run: str = arg("", "a train.py --out directory holding sft/ (and vlm/, vlm-<tag>/) (required)")
    split: Literal["val", "test"] = arg("val", "grids to decode")
    lm_stage: Literal["sft", "pretrain"] = arg(
        "sft", "the LM scored on the text grids: after sft, or straight from pre-training"
    )
    grids: int = arg(250, "grids decoded (each of their cells asked alone)", ge=1)
    batch_size: int = arg(128, "prompts decoded at once", ge=1)
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device")
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0)

    def validate(self) -> None:
        if not self.run:
            raise ValueError("pass --run DIR (the --out of train.py)")
        if not Path(self.run).is_dir():
            raise ValueError(f"--run {self.run} is not a directory")


@dataclass
class ProbeConfig:
    """Flags of probe.py."""

    run: str = arg("", "a train.py --out directory holding vlm/ (required)")
    stage: str = arg("vlm", "the VLM stage directory to probe (vlm, vlm-onehot, ...)")
    train_grids: int = arg(2_000, "training grids of the probes", ge=2)
    test_grids: int = arg(250, "held-out grids (test split)", ge=1)
    max_iter: int = arg(100, "L-BFGS iterations per probe", ge=1)
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device")
    threads: int = arg(0, "torch CPU threads; 0 = torch's default", ge=0)

    def validate(self) -> None:
        if not self.run:
            raise ValueError("pass --run DIR (the --out of train.py)")
        if not (Path(self.run) / self.stage / "model").is_dir():
            raise ValueError(
                f"--run {self.run} --stage {self.stage}: no finished VLM in "
                f"{Path(self.run) / self.stage} (run train.py --stage vlm first)"
            )
