"""torchrun worker for test_distributed.py: every registered loss, 2 ranks vs 1 process.

Usage: torchrun --nproc_per_node W _dist_worker.py OUT.json

For every case of ``_loss_cases.all_cases()`` and two consecutive steps, each rank
compares with one process on the concatenated (global) batch:
- the loss value, averaged over ranks;
- the gradient w.r.t. its local features (backpropagating the rank's own value, as a
  training script does), divided by the world size (what DDP's averaging makes of it
  in the model), against the matching rows of the single-process gradient;
- the gradient of every loss parameter as the loss leaves it: the loss averages it
  over ranks itself, so it must equal the single-process gradient on every rank;
- every entry of the state dict (per-sample state, EMAs, parameters) after the step.
The single-process references are computed in the same process before the process
group is initialised.

Then, for every loss with learnable parameters, a short training run: two linear
encoders wrapped in DDP and the loss outside it (the README's recipe), AdamW over both,
``TRAIN_STEPS`` steps on this rank's share of each global batch, against the same
training in one process on the whole batch; every parameter, model and loss, must match,
with nothing all-reduced by hand. Rank 0 writes {case id: [problems]} as JSON.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import traceback

import torch
import torch.distributed as dist
from _loss_cases import (
    FEATURE_TENSORS,
    all_cases,
    build,
    make_inputs,
    rank_rows,
    split_inputs,
    with_grad,
)

STEPS = 2
TRAIN_STEPS = 4
LOCAL_BATCH = 4
RTOL, ATOL = 1e-4, 1e-5


def run_steps(case, global_inputs, world=1, rank=0):
    """Per step: (value, {feature: grad}, {param: grad}, state dict) of this process."""
    loss = build(case)
    records = []
    for inputs in global_inputs:
        inputs = with_grad(split_inputs(loss, inputs, world, rank) if world > 1 else inputs)
        value = loss(**inputs)
        value.backward()
        grads = {k: v.grad.clone() for k, v in inputs.items() if k in FEATURE_TENSORS}
        param_grads = {
            name: p.grad.clone() for name, p in loss.named_parameters() if p.grad is not None
        }
        loss.zero_grad(set_to_none=True)
        state = {k: v.detach().clone() for k, v in loss.state_dict().items()}
        records.append((value.detach().clone(), grads, param_grads, state))
    return loss, records


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    if got.shape != want.shape:
        return False
    if not got.is_floating_point():
        return torch.equal(got, want)
    scale = float(want.abs().max()) if want.numel() else 0.0
    return torch.allclose(got, want, rtol=RTOL, atol=ATOL * max(1.0, scale))


def describe(what: str, got: torch.Tensor, want: torch.Tensor) -> str:
    if got.shape != want.shape:
        return f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    return f"{what}: max abs diff {diff:.3g} (reference max {want.abs().max().item():.3g})"


def compare(case, loss, records, references, global_inputs, world, rank) -> list[str]:
    problems = []
    for step, ((value, grads, pgrads, state), (rv, rgrads, rpgrads, rstate)) in enumerate(
        zip(records, references[1])
    ):
        prefix = f"rank {rank} step {step}"
        mean_value = value.clone()
        dist.all_reduce(mean_value)
        mean_value /= world
        if not close(mean_value, rv):
            problems.append(describe(f"{prefix} value (mean over ranks)", mean_value, rv))
        for key, grad in grads.items():
            total = global_inputs[step][key].shape[0]
            if key in ("image_negatives", "text_negatives"):
                local = total // world
                rows = torch.arange(rank * local, (rank + 1) * local)
            else:
                rows = rank_rows(loss, total, world, rank)
            if not close(grad / world, rgrads[key][rows]):
                problems.append(describe(f"{prefix} grad {key}", grad / world, rgrads[key][rows]))
        if set(pgrads) != set(rpgrads):
            problems.append(f"{prefix} parameters with grad {sorted(pgrads)} != {sorted(rpgrads)}")
        for name, grad in pgrads.items():
            if name in rpgrads and not close(grad, rpgrads[name]):
                problems.append(describe(f"{prefix} grad of parameter {name}", grad, rpgrads[name]))
        if set(state) != set(rstate):
            problems.append(f"{prefix} state keys {sorted(state)} != {sorted(rstate)}")
        for key in state.keys() & rstate.keys():
            if not close(state[key], rstate[key]):
                problems.append(describe(f"{prefix} state {key}", state[key], rstate[key]))
    return problems


class Encoders(torch.nn.Module):
    """Two linear encoders: raw inputs [B, 12] -> image and text features [B, 16]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.image, self.text = torch.nn.Linear(12, 16), torch.nn.Linear(12, 16)

    def forward(self, image_in, text_in):
        return self.image(image_in), self.text(text_in)


def train(case, batches, world=1, rank=0) -> dict[str, torch.Tensor]:
    """Every parameter (``model.*``, ``loss.*``) after AdamW steps on ``batches``; with
    world > 1 the model is in DDP, the loss outside it, and this rank trains its rows."""
    model, loss = Encoders(), build(case)
    runner = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW([*model.parameters(), *loss.parameters()], lr=0.05)
    for inputs in batches:
        if world > 1:
            inputs = split_inputs(loss, inputs, world, rank)
        image, text = runner(inputs["image_in"], inputs["text_in"])
        rest = {k: v for k, v in inputs.items() if k not in ("image_in", "text_in")}
        value = loss(image, text, **rest)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    params = {f"model.{n}": p.detach().clone() for n, p in model.named_parameters()}
    params |= {f"loss.{n}": p.detach().clone() for n, p in loss.named_parameters()}
    return params


def training_batches(case) -> list[dict[str, torch.Tensor]]:
    """TRAIN_STEPS global batches of raw encoder inputs (+ index for stateful losses)."""
    probe = build(case)
    out = []
    for step in range(TRAIN_STEPS):
        inputs = make_inputs(probe, case, batch=LOCAL_BATCH * 2, dim=12, seed=100 + step)
        inputs["image_in"] = inputs.pop("image_features")
        inputs["text_in"] = inputs.pop("text_features")
        out.append(inputs)
    return out


# clip's logit bias is a softmax no-op: its gradient is rounding noise, which Adam's
# normalisation turns into full-size steps of either sign; it is compared across ranks only
NOISE_ONLY = {"loss.logit_bias"}


def compare_training(case, reference, got, rank) -> list[str]:
    problems = []
    for name, want in reference.items():
        if case.name == "clip" and name in NOISE_ONLY:
            pass
        elif not torch.allclose(got[name], want, rtol=1e-5, atol=1e-6):
            problems.append(describe(f"rank {rank} trained {name}", got[name], want))
        same = got[name].clone()
        dist.broadcast(same, src=0)
        if not torch.equal(same, got[name]):
            problems.append(f"rank {rank} trained {name} differs from rank 0's")
    return problems


def trainable(case) -> bool:
    """Losses with learnable parameters (lp_simclr's explicit negatives need other inputs)."""
    return any(True for _ in build(case).parameters()) and not case.negatives


def check_error_agreement(rank: int) -> list[str]:
    """A bad input on rank 1 only must raise ValueError on both ranks, not hang."""
    problems = []
    for case in all_cases():
        loss = build(case)
        inputs = make_inputs(loss, case, batch=LOCAL_BATCH, seed=5)
        if rank == 1:
            inputs["image_features"][0, 0] = float("nan")
        try:
            loss(**inputs)
            problems.append(f"{case.id}: rank {rank} did not raise")
        except ValueError as err:
            if "NaN" not in str(err):
                problems.append(f"{case.id}: rank {rank} raised an unrelated error: {err}")
    return problems


def main() -> None:
    out_path = sys.argv[1]
    cases = all_cases()
    world = int(os.environ["WORLD_SIZE"])
    # Single-process references first, before any process group exists.
    references, global_inputs = {}, {}
    for case in cases:
        try:
            probe = build(case)
            steps = [
                make_inputs(probe, case, batch=LOCAL_BATCH * world, seed=10 + s)
                for s in range(STEPS)
            ]
            global_inputs[case.id] = steps
            references[case.id] = run_steps(case, steps)
        except Exception:
            references[case.id] = traceback.format_exc()

    train_cases = [c for c in cases if trainable(c)]
    train_inputs = {c.id: training_batches(c) for c in train_cases}
    train_refs = {c.id: train(c, train_inputs[c.id]) for c in train_cases}

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank = dist.get_rank()
    results = {}
    for case in cases:
        try:
            if isinstance(references[case.id], str):
                raise RuntimeError("single-process reference failed:\n" + references[case.id])
            loss, records = run_steps(case, global_inputs[case.id], world, rank)
            problems = compare(
                case, loss, records, references[case.id], global_inputs[case.id], world, rank
            )
        except Exception:
            problems = [f"rank {rank}: " + traceback.format_exc()]
        results[case.id] = problems
    for case in train_cases:
        try:
            got = train(case, train_inputs[case.id], world, rank)
            problems = compare_training(case, train_refs[case.id], got, rank)
        except Exception:
            problems = [f"rank {rank}: " + traceback.format_exc()]
        results[f"_train:{case.id}"] = problems
    results["_bad_input_on_one_rank"] = check_error_agreement(rank)

    # Every rank writes its own file (all_gather_object would need numpy, which a
    # torch-only environment lacks); rank 0 merges them after a barrier.
    with open(f"{out_path}.rank{rank}", "w") as f:
        json.dump(results, f)
    dist.barrier()
    if rank == 0:
        gathered = []
        for r in range(world):
            with open(f"{out_path}.rank{r}") as f:
                gathered.append(json.load(f))
        merged = {key: [p for r in gathered for p in r[key]] for key in results}
        with open(out_path, "w") as f:
            json.dump(merged, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
