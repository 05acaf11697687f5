"""Test cases shared by the registry tests and the distributed worker.

Every registered loss is a case with small defaults; a few extra configurations of the
same names (learnable / per-sample temperatures, explicit negatives, ...) are added, so
a newly registered loss is tested by being registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

import mm_losses

NUM_SAMPLES = 64  # dataset size given to stateful losses
FEATURE_TENSORS = ("image_features", "text_features", "image_negatives", "text_negatives")


@dataclass(frozen=True)
class Case:
    """One loss configuration: registry name, constructor kwargs, call variant."""

    id: str
    name: str
    kwargs: dict = field(default_factory=dict, hash=False)
    negatives: bool = False  # pass explicit negative batches (lp_simclr)


EXTRA_CASES = [
    Case("clip[learnable]", "clip", {"temperature": "learnable"}),
    Case("clip[per_sample]", "clip", {"temperature": "per_sample", "tau": 0.05}),
    Case("clip[raw,bias]", "clip", {"normalize": False, "logit_bias": -1.0, "tau": 2.0}),
    Case("cyclip[learnable]", "cyclip", {"temperature": "learnable", "in_modal_weight": 1.0}),
    Case("siglip[fixed]", "siglip", {"learnable": False}),
    Case("lp_simclr[negatives]", "lp_simclr", negatives=True),
    Case("ghm_clip[K=3]", "ghm_clip", {"num_negatives": 3}),
]


def all_cases() -> list[Case]:
    """Every registered loss with its defaults, then the extra configurations."""
    registered = [Case(name, name) for name in mm_losses.available()]
    return registered + [c for c in EXTRA_CASES if c.name in mm_losses.available()]


def build(case: Case) -> torch.nn.Module:
    """Build the case's loss; ``num_samples`` is given to losses that keep per-sample state."""
    cls = mm_losses.get(case.name)
    kwargs = dict(case.kwargs)
    if getattr(cls, "stateful", False) or kwargs.get("temperature") == "per_sample":
        kwargs.setdefault("num_samples", NUM_SAMPLES)
    torch.manual_seed(0)  # identical initialisation of any random parameter
    return mm_losses.build(case.name, **kwargs)


def make_inputs(
    loss: torch.nn.Module, case: Case, batch: int = 8, dim: int = 16, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Correlated image/text features of ``batch * loss.batch_multiple`` rows (+ index)."""
    g = torch.Generator().manual_seed(seed)
    rows = batch * getattr(loss, "batch_multiple", 1)
    image = torch.randn(rows, dim, generator=g)
    text = 0.6 * image + 0.8 * torch.randn(rows, dim, generator=g)
    inputs = {"image_features": image, "text_features": text}
    if getattr(loss, "stateful", False):
        inputs["index"] = torch.randperm(NUM_SAMPLES, generator=g)[:rows]
    if case.negatives:
        inputs["image_negatives"] = torch.randn(rows, dim, generator=g)
        inputs["text_negatives"] = torch.randn(rows, dim, generator=g)
    return inputs


def with_grad(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fresh leaf copies of the inputs; feature tensors require grad."""
    out = {}
    for key, value in inputs.items():
        value = value.detach().clone()
        if key in FEATURE_TENSORS:
            value.requires_grad_(True)
        out[key] = value
    return out


def rank_rows(loss: torch.nn.Module, total: int, world: int, rank: int) -> torch.Tensor:
    """Rows of a global batch of ``total`` rows that belong to ``rank``.

    Plain losses: a contiguous chunk. Losses whose batch is ``batch_multiple`` blocks
    (ghm_clip): the rank's slice of every block, so that the concatenation of the ranks'
    batches block by block is again a valid layout.
    """
    blocks = getattr(loss, "batch_multiple", 1)
    block = total // blocks
    local = block // world
    starts = torch.arange(blocks) * block + rank * local
    return (starts[:, None] + torch.arange(local)[None, :]).reshape(-1)


def split_inputs(
    loss: torch.nn.Module, inputs: dict[str, torch.Tensor], world: int, rank: int
) -> dict[str, torch.Tensor]:
    """The share of ``rank`` of a global batch of inputs."""
    out = {}
    for key, value in inputs.items():
        if key in ("image_negatives", "text_negatives"):
            local = value.shape[0] // world
            out[key] = value[rank * local : (rank + 1) * local]
        else:
            out[key] = value[rank_rows(loss, value.shape[0], world, rank)]
    return out


def assert_close(got: torch.Tensor, want, rtol: float = 1e-7, atol: float = 1e-9, what="") -> None:
    """Like torch.testing.assert_close (whose first call imports DTensor and sympy: ~10 s)."""
    want = torch.as_tensor(want, dtype=got.dtype) if not isinstance(want, torch.Tensor) else want
    got, want = got.detach(), want.detach().to(got.dtype)
    assert got.shape == want.shape, f"{what} shape {tuple(got.shape)} != {tuple(want.shape)}"
    if not torch.allclose(got, want, rtol=rtol, atol=atol):
        diff = (got - want).abs().max().item()
        raise AssertionError(
            f"{what} not close: max abs diff {diff:.3g} (rtol={rtol}, atol={atol})\n"
            f"got  {got}\nwant {want}"
        )
