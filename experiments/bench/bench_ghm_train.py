"""GHM CLIP training throughput: the app's model and step against the same model written
plainly in PyTorch, on the same batch, in one run.

    uv run python experiments/bench/bench_ghm_train.py                     # depth-preset tree
    uv run python experiments/bench/bench_ghm_train.py --tree 3,2,6 --d-model 64 --depth 3

"ours" is one optimizer step of apps/ghm (mm_models.ghm.GHMClipModel, the app's step_fn
with mm_losses' ghm_clip, AdamW, clipping at 1.0). "plain" is the same architecture written
here with nn.Linear/LayerNorm and scaled_dot_product_attention, no input checks, the same
weights (its outputs are checked equal to ours before timing) and the same loss written
inline. "sampling" is drawing one training batch from the GHM (fresh samples every step),
"bf16" ours under CPU bfloat16 autocast (not used for training: it changes the risk).
Steps are interleaved (ours, plain, ours, ...) after a warm-up; medians over --repeats.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "apps" / "ghm"))

from ghm_tasks import GHMAppConfig, build_ghm, build_model, make_step_fn, sample_fn

from mm_train import build_adamw


class PlainEncoder(nn.Module):
    """Embeddings -> pre-LN blocks (1-head attention, no output projection; GELU MLP) ->
    final LN -> Linear(d -> E) per token -> Linear over positions."""

    def __init__(self, vocab: int, n_leaves: int, d: int, depth: int, embed_dim: int = 10):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(n_leaves, d))
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "ln1": nn.LayerNorm(d),
                    "qkv": nn.Linear(d, 3 * d),
                    "ln2": nn.LayerNorm(d),
                    "fc": nn.Linear(d, 4 * d),
                    "proj": nn.Linear(4 * d, d),
                }
            )
            for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, embed_dim)
        self.pool = nn.Linear(n_leaves, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).chunk(3, dim=-1)
            x = x + F.scaled_dot_product_attention(q, k, v)
            x = x + b["proj"](F.gelu(b["fc"](b["ln2"](x))))
        return self.pool(self.head(self.ln_f(x)).transpose(1, 2)).squeeze(-1)


def plain_from(ours: nn.Module, cfg: GHMAppConfig) -> nn.Module:
    """Two PlainEncoders carrying the weights of the app's text and image encoders."""
    n_leaves = cfg.n_child**cfg.n_layer
    encoders = nn.ModuleList()
    for enc in (ours.text_encoder, ours.image_encoder):
        plain = PlainEncoder(cfg.vocab, n_leaves, cfg.d_model, cfg.depth)
        plain.tok.weight.data.copy_(enc.tok_emb.weight)
        plain.pos.data.copy_(enc.pos_emb)
        for mine, theirs in zip(plain.blocks, enc.transformer.blocks, strict=True):
            for name, module in (("ln1", theirs.ln_1), ("qkv", theirs.attn.qkv), ("ln2", theirs.ln_2),
                                 ("fc", theirs.mlp.fc), ("proj", theirs.mlp.proj)):  # fmt: skip
                mine[name].load_state_dict(module.state_dict())
        plain.ln_f.load_state_dict(enc.transformer.ln_f.state_dict())
        plain.head.load_state_dict(enc.token_head.state_dict())
        plain.pool.load_state_dict(enc.position_head.state_dict())
        encoders.append(plain)
    return encoders


def plain_loss(encoders: nn.Module, batch, k: int) -> torch.Tensor:
    """The K-negative CLIP loss (both directions summed, batch mean), written inline."""
    f_text, f_image = encoders[0](batch.text), encoders[1](batch.image)
    b = f_text.shape[0] // (k + 1)
    t, i = f_text.view(k + 1, b, -1), f_image.view(k + 1, b, -1)
    texts = torch.cat([t[:1], t[2:]])  # image anchors of block 0: matched text, negatives
    images = torch.cat([i[1:2], i[2:]])  # text anchors of block 1
    logits1 = (texts * i[:1]).sum(-1).T  # [b, k]
    logits2 = (images * t[1:2]).sum(-1).T
    target = torch.zeros(b, dtype=torch.long)
    return F.cross_entropy(logits1, target) + F.cross_entropy(logits2, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default="3,2,16", help="n_layer,n_child,vocab")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_layer, n_child, vocab = map(int, args.tree.split(","))
    cfg = GHMAppConfig(
        n_layer=n_layer, n_child=n_child, vocab=vocab, d_model=args.d_model, depth=args.depth,
        batch_size=args.batch_size, lr=1e-3,
    )  # fmt: skip
    ghm = build_ghm(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    ours = build_model(cfg)
    plain = plain_from(ours, cfg)
    gen = torch.Generator().manual_seed(0)
    draw = sample_fn(cfg, ghm)
    batch = draw(gen, 0)
    step = make_step_fn(cfg, ghm, None)
    with torch.no_grad():
        mine, reference = step(ours, batch)[0], plain_loss(plain, batch, cfg.num_negatives)
    if not math.isclose(float(mine), float(reference), rel_tol=1e-5):
        raise SystemExit(
            f"the plain model disagrees with ours: {float(reference)} vs {float(mine)}"
        )

    def one_step(model, loss_fn, optimizer, autocast: bool = False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    runners = {
        "ours": (ours, lambda m: step(m, batch)[0], build_adamw(ours, lr=1e-3), False),
        "plain": (plain, lambda m: plain_loss(m, batch, cfg.num_negatives),
                  torch.optim.AdamW(plain.parameters(), lr=1e-3, weight_decay=1e-3), False),
        "ours bf16": (ours, lambda m: step(m, batch)[0], build_adamw(ours, lr=1e-3), True),
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in [*runners, "sampling"]}
    for model, loss_fn, opt, amp in runners.values():
        one_step(model, loss_fn, opt, amp)  # warm-up
    for _ in range(args.repeats):
        for name, (model, loss_fn, opt, amp) in runners.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                one_step(model, loss_fn, opt, amp)
            times[name].append((time.perf_counter() - start) / args.steps)
        start = time.perf_counter()
        for _ in range(args.steps):
            draw(gen, 0)
        times["sampling"].append((time.perf_counter() - start) / args.steps)
    med = {name: statistics.median(ts) * 1000 for name, ts in times.items()}
    leaves = n_child**n_layer
    print(
        f"tree {args.tree} ({leaves} leaves), d_model {args.d_model}, depth {args.depth}, batch "
        f"{args.batch_size} x (K+1) = {args.batch_size * 5} trees per modality, "
        f"{args.threads} thread(s); median of {args.repeats} x {args.steps} steps\n"
    )
    print("| path | ms / step | step/s | vs plain |\n|---|---|---|---|")
    for name, ms in med.items():
        print(f"| {name} | {ms:.1f} | {1000 / ms:.2f} | {ms / med['plain']:.2f} |")


if __name__ == "__main__":
    main()
