"""When do two unimodal encoders align? Sweep uniqueness U and heterogeneity D_phi.

    uv run apps/alignment/emergence.py --out runs/emergence              # default preset, CPU minutes
    uv run apps/alignment/emergence.py --preset paper --out runs/emergence-paper

For every seed, U and D_phi: a modality-1 encoder (depth 1) and modality-2 encoders of
each depth D_enc are trained to predict the label from their own modality only; then the
alignment of their post-activation hidden layers (best layer pair) is measured on the
first test samples. All encoders train together as batched ensembles (one module per
depth), each with its own initialisation, gradient clipping and data, exactly as if
trained one by one. Writes DIR/accuracy.csv, DIR/alignment.csv, DIR/summary.json
(``rho_<metric>_dphi<d>``: Spearman rho of the maximum alignment over D_enc vs U, and the
alignment-performance correlations per U) and the plots alignment_vs_u.png and
alignment_vs_perf.png. Method and the paper's numbers: apps/alignment/METHOD.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment_config import EMERGENCE_FILES, EmergenceConfig

from mm_train import parse_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(
        EmergenceConfig, argv, preset_dir=HERE / "presets" / "emergence", description=__doc__
    )
    return run(cfg)


def run(cfg: EmergenceConfig) -> dict[str, Any]:
    # torch and the models load here, once the flags are checked: --help answers at once
    import torch
    from emergence_tasks import Sweep, measure_alignment, summarise, write_outputs

    from mm_data.alignment import make_synthetic
    from mm_train import atomic_write_json, config_to_dict, fit, init_distributed, start_run

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(cfg.device)
    if info.world_size > 1:
        raise SystemExit("emergence.py runs in one process (its ensembles are already batched)")
    out = start_run(cfg, info, global_batch=cfg.batch_size, files=EMERGENCE_FILES)
    data = make_synthetic(
        cfg.n_samples, list(cfg.uniqueness), list(cfg.dphi), cfg.seed, cfg.temperature
    )
    sweep = Sweep(cfg, data, info.device)
    result = fit(
        sweep.model,
        sweep.step_fn,
        sweep.batch,
        sweep.optimizer,
        max_steps=sweep.steps_x2,
        device=info.device,
        out_dir=out,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        keep_last=cfg.keep_last,
        resume=cfg.resume,
        loggers=cfg.loggers,
        config=config_to_dict(cfg),
        seed=cfg.seed,
        eval_fn=sweep.eval_fn,
        desc=f"emergence ({sweep.num_encoders} encoders)",
    )
    val = sweep.accuracies("val")  # the trained encoders' validation accuracy, once
    accuracy = sweep.accuracy_rows(val)
    alignment = measure_alignment(cfg, sweep, val)
    summary = {
        **summarise(cfg, alignment),
        "encoders": sweep.num_encoders,
        "steps": result.step,
        "train_seconds": result.elapsed_s,
        "final_loss": result.metrics.get("loss"),
    }
    write_outputs(cfg, out, accuracy, alignment, summary)
    atomic_write_json(out / "summary.json", summary)
    rhos = ", ".join(
        f"{m} D_phi={d}: {summary[f'rho_{m}_dphi{d}']:+.3f}" for m in cfg.metrics for d in cfg.dphi
    )
    print(f"Spearman rho(max alignment, U): {rhos}\nwrote {out}/summary.json and the plots")
    return summary


if __name__ == "__main__":
    main()
