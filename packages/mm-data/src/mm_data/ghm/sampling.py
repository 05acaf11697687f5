"""Vectorised GHM samplers: one draw per level for the whole batch and all nodes.

Every sampler takes a :class:`~mm_data.ghm.tree.GHM` or
:class:`~mm_data.ghm.tree.JointGHM`, a batch size and a ``torch.Generator`` living on
the GHM's device (``None``: torch's default generator for that device), and returns a
small dataclass of tensors on that device: node values are ``int64``, noisy values are
in the GHM's float dtype. Children are drawn with Walker's alias method (one uniform and
two table look-ups per draw): the ``n_child`` children of a parent jointly from the
product of their rows (``vocab**n_child`` outcomes; one draw per parent) when that table
is small, else one child at a time. Both are exact; on the paper tree this is 2-4x
faster than an inverse CDF (``searchsorted`` or comparing with the cumulative row).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mm_data.ghm.tree import GHM, JointGHM


@dataclass
class TreeSample:
    """All node values of a batch of trees; ``levels[l]`` is ``[B, n_child**l]`` int64."""

    levels: list[torch.Tensor]

    @property
    def root(self) -> torch.Tensor:
        """Root values ``[B]``."""
        return self.levels[0][:, 0]

    @property
    def leaves(self) -> torch.Tensor:
        """Leaf values ``[B, n_leaves]`` (the token sequence)."""
        return self.levels[-1]


@dataclass
class JointSample:
    """Paired text and image trees with a shared root."""

    root: torch.Tensor  # [B]
    text: TreeSample
    image: TreeSample


@dataclass
class ClassificationBatch:
    """Leaves of one tree and the root as class label."""

    leaves: torch.Tensor  # [B, n_leaves] int64
    label: torch.Tensor  # [B] int64


@dataclass
class ClipBatch:
    """``B * (k + 1)`` text and image leaf sequences for the K-negative CLIP loss.

    Blocks ``[0, B)`` and ``[B, 2B)`` are matched pairs (``text[i]`` and ``image[i]``
    share a root); blocks ``[2B, B(k+1))`` are independent draws (own roots for text and
    image). Direction 1 scores image ``i`` against texts ``i, 2B + i, 3B + i, ...``;
    direction 2 scores text ``B + i`` against images ``B + i, 2B + i, 3B + i, ...``.
    """

    text: torch.Tensor  # [B(k+1), n_leaves] int64
    image: torch.Tensor  # [B(k+1), n_leaves] int64
    text_root: torch.Tensor  # [B(k+1)]
    image_root: torch.Tensor  # [B(k+1)]
    batch_size: int
    k: int


@dataclass
class DenoisingBatch:
    """Clean leaves ``x`` and noisy leaves ``z = x + sigma * N(0, 1)``."""

    x: torch.Tensor  # [B, n_leaves] int64
    z: torch.Tensor  # [B, n_leaves] float
    sigma: float


@dataclass
class ConditionalDenoisingBatch:
    """Text leaves and noisy image leaves as input, clean image leaves as target."""

    text: torch.Tensor  # [B, n_leaves] int64
    noisy_image: torch.Tensor  # [B, n_leaves] float
    image: torch.Tensor  # [B, n_leaves] int64 (target)
    root: torch.Tensor  # [B]
    sigma: float


@dataclass
class NextWordBatch:
    """Image leaves and text leaves; the model reads ``input`` and predicts ``target``."""

    image: torch.Tensor  # [B, n_leaves] int64
    text: torch.Tensor  # [B, n_leaves] int64
    input: torch.Tensor  # [B, n_leaves - 1] = text[:, :-1]
    target: torch.Tensor  # [B, n_leaves - 1] = text[:, 1:]
    root: torch.Tensor  # [B]


@dataclass
class ZeroShotBatch:
    """Paired trees; the class label of a sample is its first text leaf."""

    text: torch.Tensor  # [B, n_leaves] int64
    image: torch.Tensor  # [B, n_leaves] int64
    label: torch.Tensor  # [B] = text[:, 0]
    root: torch.Tensor  # [B]


def _check_generator(ghm: GHM, generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != ghm.device.type:
        raise ValueError(
            f"generator lives on {generator.device} but the GHM tables are on {ghm.device}; "
            "pass a torch.Generator(device=ghm.device)"
        )


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def sample_root(
    ghm: GHM, batch_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Root values ``[B]`` from the uniform prior."""
    _check_batch_size(batch_size)
    _check_generator(ghm, generator)
    return torch.randint(ghm.config.vocab, (batch_size,), generator=generator, device=ghm.device)


def _sample_children(
    ghm: GHM, level: int, parents: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Children ``[B, n_child * n_parents]`` of ``parents`` ``[B, n_parents]``: all children of
    a parent at once from the joint table when it fits, else child by child."""
    table = ghm._combo_sampler(level)
    if table is None:
        return _sample_children_one_by_one(ghm, level, parents, generator)
    b, n_par = parents.shape
    c = table.n_combos
    u = torch.rand(b, n_par, generator=generator, device=ghm.device, dtype=torch.float64)
    u = u * c
    j = u.long().clamp_max_(c - 1)
    idx = table.row_base + parents * c + j
    combo = torch.where((u - j) < table.accept.take(idx), j, table.alias.take(idx))
    return F.embedding(combo, table.digits).reshape(b, -1)


def _sample_children_one_by_one(
    ghm: GHM, level: int, parents: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Children ``[B, n_child * n_parents]`` of ``parents`` ``[B, n_parents]`` by the alias
    method: one uniform ``u`` per node, column ``j = floor(V u)``, kept if the fractional
    part is below ``accept[row, j]``, else ``alias[row, j]``."""
    b, n_par = parents.shape
    v = ghm.config.vocab
    u = torch.rand(b, n_par, ghm.config.n_child, generator=generator, device=ghm.device)
    u = u * v
    j = u.long().clamp_max_(v - 1)  # u * v may round up to v in float32
    idx = (ghm._row_base[level - 1] + parents[:, :, None]) * v + j
    keep = (u - j) < ghm._alias_accept[level - 1].take(idx)
    child = torch.where(keep, j, ghm._alias_index[level - 1].take(idx))
    return child.reshape(b, -1)


def _first_leaf_path_messages(ghm: GHM, first_leaf: torch.Tensor) -> list[torch.Tensor]:
    """Likelihoods ``p(first leaf | node value)`` of the leftmost node of every level."""
    cfg = ghm.config
    lik = torch.nn.functional.one_hot(first_leaf, cfg.vocab).to(ghm.dtype)  # [B, V]
    out = [lik]
    for level in range(cfg.n_layer, 0, -1):
        m = ghm.transitions[level - 1][0, 0]  # leftmost node of `level` is slot 0 of node 0
        lik = lik @ m.T
        lik = lik / lik.sum(-1, keepdim=True)
        out.append(lik)
    return out[::-1]  # index by level


def sample_tree(
    ghm: GHM,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    root: torch.Tensor | None = None,
    first_leaf: torch.Tensor | None = None,
) -> TreeSample:
    """Sample trees top-down; optionally with given ``root`` ``[B]`` or conditioned on the
    value of the first (leftmost) leaf ``first_leaf`` ``[B]``."""
    _check_batch_size(batch_size)
    _check_generator(ghm, generator)
    cfg = ghm.config
    for name, t in (("root", root), ("first_leaf", first_leaf)):
        if t is not None and (t.shape != (batch_size,) or t.dtype != torch.long):
            raise ValueError(f"{name} must be an int64 tensor of shape [{batch_size}]")
        if t is not None and t.numel() > 0:
            lo, hi = torch.aminmax(t)
            if lo < 0 or hi >= cfg.vocab:
                raise ValueError(f"{name} values must be in [0, {cfg.vocab}), got [{lo}, {hi}]")
    if root is not None and first_leaf is not None:
        raise ValueError("give at most one of root and first_leaf")
    path = None
    if first_leaf is not None:
        path = _first_leaf_path_messages(ghm, first_leaf.to(ghm.device))
        post = path[0] * ghm.log_prior.exp()
        root = torch.multinomial(post / post.sum(-1, keepdim=True), 1, generator=generator)[:, 0]
    elif root is None:
        root = sample_root(ghm, batch_size, generator)
    levels = [root.to(ghm.device).reshape(batch_size, 1)]
    for level in range(1, cfg.n_layer + 1):
        child = _sample_children(ghm, level, levels[-1], generator)
        if path is not None:  # redraw the leftmost node from p(child | parent, first leaf)
            w = ghm.transitions[level - 1][0, 0][levels[-1][:, 0]] * path[level]
            child[:, 0] = torch.multinomial(w / w.sum(-1, keepdim=True), 1, generator=generator)[
                :, 0
            ]
        levels.append(child)
    return TreeSample(levels)


def sample_joint(
    joint: JointGHM,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    root: torch.Tensor | None = None,
) -> JointSample:
    """Paired text and image trees sharing one root (drawn, or given as ``root`` ``[B]``)."""
    if root is None:
        root = sample_root(joint.text, batch_size, generator)
    text = sample_tree(joint.text, batch_size, generator, root=root)
    image = sample_tree(joint.image, batch_size, generator, root=root)
    return JointSample(root=root, text=text, image=image)


def sample_classification(
    ghm: GHM, batch_size: int, generator: torch.Generator | None = None
) -> ClassificationBatch:
    """Leaves of one tree with their root as label."""
    tree = sample_tree(ghm, batch_size, generator)
    return ClassificationBatch(leaves=tree.leaves, label=tree.root)


def sample_clip(
    joint: JointGHM, batch_size: int, generator: torch.Generator | None = None, k: int = 4
) -> ClipBatch:
    """``B(k+1)`` text and image sequences: two matched blocks, then ``k - 1`` independent
    blocks (see :class:`ClipBatch`)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (number of candidates per anchor) must be an integer >= 1, got {k!r}")
    _check_batch_size(batch_size)
    n = batch_size * (k + 1)
    text_root = sample_root(joint.text, n, generator)
    image_root = text_root.clone()
    if k > 1:  # fresh roots for the independent image blocks
        image_root[2 * batch_size :] = sample_root(joint.image, n - 2 * batch_size, generator)
    text = sample_tree(joint.text, n, generator, root=text_root).leaves
    image = sample_tree(joint.image, n, generator, root=image_root).leaves
    return ClipBatch(text, image, text_root, image_root, batch_size, k)


def sample_denoising(
    ghm: GHM,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    sigma: float | None = None,
) -> DenoisingBatch:
    """Leaves ``x`` of one tree and ``z = x + sigma * N(0, 1)`` (``sigma``: config's)."""
    sigma = ghm.config.sigma if sigma is None else float(sigma)
    x = sample_tree(ghm, batch_size, generator).leaves
    z = x.to(ghm.dtype) + sigma * torch.randn(
        x.shape, generator=generator, device=ghm.device, dtype=ghm.dtype
    )
    return DenoisingBatch(x=x, z=z, sigma=sigma)


def sample_conditional_denoising(
    joint: JointGHM,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    sigma: float | None = None,
) -> ConditionalDenoisingBatch:
    """Text leaves and noisy image leaves of paired trees; the target is the clean image."""
    sigma = joint.config.sigma if sigma is None else float(sigma)
    s = sample_joint(joint, batch_size, generator)
    x = s.image.leaves
    z = x.to(joint.dtype) + sigma * torch.randn(
        x.shape, generator=generator, device=joint.device, dtype=joint.dtype
    )
    return ConditionalDenoisingBatch(
        text=s.text.leaves, noisy_image=z, image=x, root=s.root, sigma=sigma
    )


def sample_next_word(
    joint: JointGHM, batch_size: int, generator: torch.Generator | None = None
) -> NextWordBatch:
    """Image and text leaves of paired trees; ``input = text[:, :-1]``, ``target = text[:, 1:]``."""
    s = sample_joint(joint, batch_size, generator)
    text = s.text.leaves
    return NextWordBatch(
        image=s.image.leaves, text=text, input=text[:, :-1], target=text[:, 1:], root=s.root
    )


def sample_zero_shot(
    joint: JointGHM, batch_size: int, generator: torch.Generator | None = None
) -> ZeroShotBatch:
    """Paired trees labelled by their first text leaf."""
    s = sample_joint(joint, batch_size, generator)
    return ZeroShotBatch(
        text=s.text.leaves, image=s.image.leaves, label=s.text.leaves[:, 0], root=s.root
    )


def sample_zero_shot_prompts(
    ghm: GHM | JointGHM, m: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[vocab, m, n_leaves]`` texts: row ``c`` holds ``m`` draws of ``p(text | first leaf = c)``."""
    text = ghm.text if isinstance(ghm, JointGHM) else ghm
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m (prompts per class) must be a positive integer, got {m!r}")
    v = text.config.vocab
    first = torch.arange(v, device=text.device).repeat_interleave(m)
    leaves = sample_tree(text, v * m, generator, first_leaf=first).leaves
    return leaves.reshape(v, m, text.n_leaves)
