"""torchrun worker for test_distributed.py: every registered loss, 2 ranks vs 1 process.

Usage: torchrun --nproc_per_node W _dist_worker.py OUT.json

For every case of ``_loss_cases.all_cases()`` and two consecutive steps, each rank
compares with one process on the concatenated (global) batch:
- the loss value, averaged over ranks;
- the gradient w.r.t. its local features, after backpropagating loss / world (so that
  the per-rank gradients are those of the mean over ranks, as DDP's averaging makes
  them), against the matching rows of the single-process gradient;
- the gradient of every parameter, summed over ranks;
- every entry of the state dict (per-sample state, EMAs, parameters) after the step.
The single-process references are computed in the same process before the process
group is initialised. Rank 0 writes {case id: [problems]} as JSON.
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
LOCAL_BATCH = 4
RTOL, ATOL = 1e-4, 1e-5


def run_steps(case, global_inputs, world=1, rank=0):
    """Per step: (value, {feature: grad}, {param: grad}, state dict) of this process."""
    loss = build(case)
    records = []
    for inputs in global_inputs:
        inputs = with_grad(split_inputs(loss, inputs, world, rank) if world > 1 else inputs)
        value = loss(**inputs)
        (value / world).backward()
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
            if not close(grad, rgrads[key][rows]):
                problems.append(describe(f"{prefix} grad {key}", grad, rgrads[key][rows]))
        if set(pgrads) != set(rpgrads):
            problems.append(f"{prefix} parameters with grad {sorted(pgrads)} != {sorted(rpgrads)}")
        for name, grad in pgrads.items():
            summed = grad.clone()
            dist.all_reduce(summed)
            if name in rpgrads and not close(summed, rpgrads[name]):
                problems.append(
                    describe(f"{prefix} grad of parameter {name}", summed, rpgrads[name])
                )
        if set(state) != set(rstate):
            problems.append(f"{prefix} state keys {sorted(state)} != {sorted(rstate)}")
        for key in state.keys() & rstate.keys():
            if not close(state[key], rstate[key]):
                problems.append(describe(f"{prefix} state {key}", state[key], rstate[key]))
    return problems


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
