"""Exact belief propagation on GHM trees, in log space with max-normalisation.

Every function is vectorised over the batch and over all nodes of a level (the only
Python loop runs over the ``n_layer`` levels) and uses the matrices of the GHM it is
given: pass the GHM that generated the data for the Bayes predictor, or another one
(e.g. ``ghm.with_p(0.2)``) for misspecified BP.

Conventions: a *message* is a log-likelihood over the receiving node's values, known up
to an additive constant per node (messages are max-normalised, so they stay bounded);
where a transition matrix has zero entries (p = 0), ``log(0)`` is floored at
``log(finfo.tiny)`` so that impossible values stay finite.
Observed leaves are ``int64`` ``[B, n_leaves]``; noisy leaves are float ``[B, n_leaves]``
with Gaussian evidence ``-(z - v)^2 / (2 sigma^2)``. A ``root_message`` ``[B, vocab]`` is
extra evidence on the root, e.g. the other modality's upward root message.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mm_data.ghm.tree import GHM

_MAX_COMBO_TABLE = 1 << 22  # entries of the leaf-parent look-up table (16 MiB in float32)


@dataclass
class _LeafTables:
    """Look-up tables of the lowest BP levels for observed leaves, built once per GHM.

    ``leaf_rows``: an observed leaf x in slot s of parent p sends ``log M_{p,s}[:, x]``
    (row ``(group*S + s)*V + x``). Indexed by the value combination ``c = sum_s x_s V^(S-1-s)``
    of the ``S`` leaves under a parent ``q`` (precomputed in float64 with the same formulas):
    ``h(q) = sum_s log M_s[:, x_s]`` (``combo_h``, rows ``combo_h_base[q] + c``) and the message
    of ``q`` to its own parent ``log(M_q @ exp(h(q) - max h(q)))`` (``combo_msg``); the combo
    tables are None when they would exceed ``_MAX_COMBO_TABLE`` entries.
    """

    leaf_rows: torch.Tensor
    combo_weights: torch.Tensor
    combo_h: torch.Tensor | None = None
    combo_h_base: torch.Tensor | None = None
    combo_msg: torch.Tensor | None = None
    combo_msg_base: torch.Tensor | None = None


_TABLES: weakref.WeakKeyDictionary[GHM, _LeafTables] = weakref.WeakKeyDictionary()


def _leaf_tables(ghm: GHM) -> _LeafTables:
    """The BP look-up tables of ``ghm`` (built on first use, kept while ``ghm`` lives)."""
    found = _TABLES.get(ghm)
    if found is None:
        found = _TABLES[ghm] = _build_leaf_tables(ghm)
    return found


def _build_leaf_tables(ghm: GHM) -> _LeafTables:
    cfg = ghm.config
    v, s, n_layer = cfg.vocab, cfg.n_child, cfg.n_layer
    rows = ghm.log_transitions[-1].transpose(-1, -2).reshape(-1, v).contiguous()
    out = _LeafTables(rows, (v ** torch.arange(s - 1, -1, -1)).to(ghm.device))
    n_q, combos = cfg.level_size(n_layer - 1), v**s
    if n_q * combos * v > _MAX_COMBO_TABLE:
        return out
    m64s = ghm._m64
    tiny = torch.finfo(ghm.dtype).tiny  # same floor as the run-time log-matrices
    logm = torch.log(m64s[-1].clamp_min(tiny))  # [G, S, V(parent), V(leaf)]
    h = logm[:, 0]
    for slot in range(1, s):
        h = (h[:, :, :, None] + logm[:, slot][:, :, None, :]).flatten(2)  # [G, V, C]
    hgroup = torch.arange(n_q) if h.shape[0] > 1 else torch.zeros(n_q, dtype=torch.long)
    out.combo_h = h.transpose(1, 2).reshape(-1, v).to(ghm.device, ghm.dtype)
    out.combo_h_base = (hgroup * combos).to(ghm.device)
    if n_layer < 2:
        return out
    e = torch.exp(h - h.amax(1, keepdim=True))  # [G, V(q), C]
    up = m64s[-2]  # [G', S, V(parent of q), V(q)]
    if up.shape[0] == 1 and h.shape[0] == 1:  # translation invariant: depends on slot(q)
        msg = torch.einsum("suv,vc->scu", up[0], e[0])  # [S, C, V]
        mgroup = torch.arange(n_q) % s
    else:  # own matrices: one table block per node q
        up_q = up.reshape(-1, v, v)  # node q = parent*S + slot
        msg = torch.einsum("quv,qvc->qcu", up_q, e.expand(n_q, -1, -1))
        mgroup = torch.arange(n_q)
    out.combo_msg = torch.log(msg.clamp_min(tiny)).reshape(-1, v).to(ghm.device, ghm.dtype)
    out.combo_msg_base = (mgroup * combos).to(ghm.device)
    return out


# ----------------------------------------------------------------------------- checks


def _check_leaves(ghm: GHM, leaves: torch.Tensor, name: str = "leaves") -> torch.Tensor:
    n = ghm.n_leaves
    if not isinstance(leaves, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(leaves).__name__}")
    if leaves.dim() != 2 or leaves.shape[1] != n:
        raise ValueError(f"{name} must have shape [B, {n}], got {list(leaves.shape)}")
    if leaves.dtype.is_floating_point or leaves.dtype.is_complex or leaves.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer leaf values, got dtype {leaves.dtype}")
    if leaves.numel() > 0:
        lo, hi = torch.aminmax(leaves)
        if lo < 0 or hi >= ghm.config.vocab:
            raise ValueError(
                f"{name} values must be in [0, {ghm.config.vocab}), got range [{lo}, {hi}]"
            )
    return leaves.to(device=ghm.device, dtype=torch.long).contiguous()


def _check_noisy(ghm: GHM, noisy: torch.Tensor, name: str = "noisy") -> torch.Tensor:
    n = ghm.n_leaves
    if not isinstance(noisy, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(noisy).__name__}")
    if noisy.dim() != 2 or noisy.shape[1] != n:
        raise ValueError(f"{name} must have shape [B, {n}], got {list(noisy.shape)}")
    if not noisy.dtype.is_floating_point:
        raise ValueError(f"{name} must be a float tensor, got dtype {noisy.dtype}")
    if not torch.isfinite(noisy).all():
        raise ValueError(f"{name} must be finite")
    return noisy.to(device=ghm.device, dtype=ghm.dtype).contiguous()


def _check_root_message(ghm: GHM, msg: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    if msg is None:
        return None
    v = ghm.config.vocab
    if not isinstance(msg, torch.Tensor) or msg.shape != (batch, v):
        shape = list(msg.shape) if isinstance(msg, torch.Tensor) else type(msg).__name__
        raise ValueError(f"root_message must have shape [{batch}, {v}], got {shape}")
    return msg.to(device=ghm.device, dtype=ghm.dtype)


def _sigma(ghm: GHM, sigma: float | None) -> float:
    sigma = ghm.config.sigma if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return sigma


# ------------------------------------------------------------------------ primitives
#
# Internal layout. A level is a tensor [V, n_nodes, B] (nodes left to right, batch last);
# the messages of the children of the nodes of a level are [S, V, n_parents, B] (child
# ``p * S + s`` at [s, :, p, :]); the leaves in this "slot" layout are [S, ..., n_{L-1}, B].
# Reductions over the value axis then run over an outer dimension and each product with
# the transition matrices is one batched matmul over the slots: a value axis of ~10 is far
# too short to be the contiguous one.


def _leaf_slots(ghm: GHM, x: torch.Tensor) -> torch.Tensor:
    """Leaf values or noise ``[B, n_leaves]`` in slot layout ``[S, n_{L-1}, B]``."""
    return x.view(x.shape[0], -1, ghm.config.n_child).permute(2, 1, 0)


def _from_leaf_slots(t: torch.Tensor) -> torch.Tensor:
    """``[S, V, P, B]`` in slot layout back to ``[B, n_leaves, V]``."""
    s, v, n_par, b = t.shape
    return t.permute(3, 2, 0, 1).reshape(b, n_par * s, v)


def _up(ghm: GHM, level: int, e: torch.Tensor) -> torch.Tensor:
    """``out[s, u, p, b] = sum_v M_{level, p, s}[u, v] e[s, v, p, b]``."""
    s, v, n_par, b = e.shape
    if ghm.transitions[level - 1].shape[0] == 1:
        out = torch.bmm(ghm._bmm_up[level - 1], e.reshape(s, v, n_par * b))
        return out.view(s, v, n_par, b)
    return torch.einsum("psuv,svpb->supb", ghm.transitions[level - 1], e).contiguous()


def _down(ghm: GHM, level: int, e: torch.Tensor) -> torch.Tensor:
    """``out[s, v, p, b] = sum_u e[s, u, p, b] M_{level, p, s}[u, v]``."""
    s, v, n_par, b = e.shape
    if ghm.transitions[level - 1].shape[0] == 1:
        out = torch.bmm(ghm._bmm_down[level - 1], e.reshape(s, v, n_par * b))
        return out.view(s, v, n_par, b)
    return torch.einsum("psuv,supb->svpb", ghm.transitions[level - 1], e).contiguous()


def _log(ghm: GHM, level: int, x: torch.Tensor) -> torch.Tensor:
    """``log x``, floored at ``log(tiny)`` where the level's matrices have zeros."""
    if ghm._has_zeros[level - 1]:
        x = x.clamp_min(torch.finfo(x.dtype).tiny)
    return torch.log(x)


def _push_up(ghm: GHM, level: int, h: torch.Tensor) -> torch.Tensor:
    """Upward message ``log(M @ exp(h - max h))`` from the nodes of ``level``
    ``[V, P, S, B]`` to their parents: ``[S, V, P, B]``."""
    e = torch.exp(h - h.amax(0, keepdim=True))
    return _log(ghm, level, _up(ghm, level, e.permute(2, 0, 1, 3)))


def _push_down(ghm: GHM, level: int, pre: torch.Tensor) -> torch.Tensor:
    """Downward message ``log(exp(pre - max pre) @ M)`` from parent beliefs ``[S, V, P, B]``
    (one per child slot) to the nodes of ``level``: ``[V, P * S, B]``."""
    s, v, n_par, b = pre.shape
    out = _log(ghm, level, _down(ghm, level, torch.exp(pre - pre.amax(1, keepdim=True))))
    return out.permute(1, 2, 0, 3).reshape(v, n_par * s, b)


def gaussian_leaf_evidence(
    ghm: GHM, noisy: torch.Tensor, sigma: float | None = None
) -> torch.Tensor:
    """Leaf evidence ``-(z - v)^2 / (2 sigma^2)`` for every value ``v``: ``[B, n_leaves, vocab]``."""
    noisy = _check_noisy(ghm, noisy)
    values = torch.arange(ghm.config.vocab, device=ghm.device, dtype=ghm.dtype)
    return -((noisy[:, :, None] - values) ** 2) / (2.0 * _sigma(ghm, sigma) ** 2)


@dataclass
class _Upward:
    """Upward pass: ``to_parent[l - 1]`` ``[S, V, n_{l-1}, B]`` are the messages of the nodes of
    level ``l`` to their parents; ``below[l]`` ``[V, n_l, B]`` is ``h(node)`` = log p(leaf
    evidence under node | node value) + const, for levels ``l = 0..n_layer-1``; entries the
    caller did not ask for are ``None``. ``leaf_likelihood`` ``[S, V, n_{L-1}, B]``: for noisy
    leaves, ``exp(evidence - max)``."""

    to_parent: list[torch.Tensor | None]
    below: list[torch.Tensor | None]
    leaf_likelihood: torch.Tensor | None = None

    @property
    def root(self) -> torch.Tensor:
        """``h(root)`` laid out ``[V, B]``."""
        return self.below[0][:, 0]


def _upward(
    ghm: GHM,
    leaves: torch.Tensor | None = None,
    noisy: torch.Tensor | None = None,
    sigma: float | None = None,
    need: str = "all",
) -> _Upward:
    """``h(node) = sum over children c of log(M_c @ exp(h(c)))`` level by level.

    ``need``: ``"all"`` (every message), ``"below"`` (every ``h``) or ``"root"``. For observed
    leaves the lowest one or two levels are table look-ups of the values of the leaves under
    each parent (:class:`_LeafTables`) when the per-slot messages are not needed.
    """
    cfg = ghm.config
    s, v, n_layer = cfg.n_child, cfg.vocab, cfg.n_layer
    if (leaves is None) == (noisy is None):
        raise ValueError("give exactly one of leaves (observed) and noisy (Gaussian evidence)")
    to_parent: list[torch.Tensor | None] = [None] * n_layer
    below: list[torch.Tensor | None] = [None] * n_layer
    if noisy is not None:
        noisy = _check_noisy(ghm, noisy)
        values = torch.arange(v, device=ghm.device, dtype=ghm.dtype)
        z = _leaf_slots(ghm, noisy).contiguous()[:, None]  # [S, 1, P, B]
        ev = (z - values[:, None, None]).square_().mul_(-0.5 / _sigma(ghm, sigma) ** 2)
        lik = torch.exp(ev - ev.amax(1, keepdim=True))  # [S, V, P, B]
        msg = _log(ghm, n_layer, _up(ghm, n_layer, lik))
        to_parent[n_layer - 1] = msg
        return _upward_from(ghm, msg.sum(0), n_layer - 1, to_parent, below, lik)
    leaves = _check_leaves(ghm, leaves)
    b = leaves.shape[0]
    tables = _leaf_tables(ghm)
    if need == "root" and tables.combo_msg is not None:
        # messages of the parents of the leaves to their own parents, looked up
        combo = (leaves.view(b, -1, s) * tables.combo_weights).sum(-1) + tables.combo_msg_base
        msg = F.embedding(combo, tables.combo_msg)  # [B, n_{L-1}, V]
        h = msg.view(b, -1, s, v).sum(2).permute(2, 1, 0).contiguous()
        return _upward_from(ghm, h, n_layer - 2, to_parent, below)
    if need != "all" and tables.combo_h is not None:
        combo = (leaves.view(b, -1, s) * tables.combo_weights).sum(-1) + tables.combo_h_base
        h = F.embedding(combo, tables.combo_h).permute(2, 1, 0).contiguous()  # [V, P, B]
        return _upward_from(ghm, h, n_layer - 1, to_parent, below)
    # an observed leaf x in slot s sends log M_s[:, x] straight to its parent
    rows = ghm._row_base[-1] + leaves.view(b, -1, s)  # [B, P, S]
    msg = F.embedding(rows, tables.leaf_rows).permute(2, 3, 1, 0).contiguous()  # [S, V, P, B]
    to_parent[n_layer - 1] = msg
    return _upward_from(ghm, msg.sum(0), n_layer - 1, to_parent, below)


def _upward_from(
    ghm: GHM,
    h: torch.Tensor,
    level: int,
    to_parent: list,
    below: list,
    leaf_likelihood: torch.Tensor | None = None,
) -> _Upward:
    """Finish the upward pass from ``h`` ``[V, n_level, B]`` of ``level`` to the root."""
    v, s = ghm.config.vocab, ghm.config.n_child
    below[level] = h
    for lv in range(level, 0, -1):
        msg = _push_up(ghm, lv, h.view(v, -1, s, h.shape[-1]))
        to_parent[lv - 1] = msg
        h = msg.sum(0)
        below[lv - 1] = h
    return _Upward(to_parent, below, leaf_likelihood)


def _root_prior_message(ghm: GHM, root_message: torch.Tensor | None, b: int) -> torch.Tensor:
    """``log p_y`` plus the external root message, laid out ``[V, 1, B]``."""
    ext = _check_root_message(ghm, root_message, b)
    d = ghm.log_prior[:, None, None].expand(-1, 1, b)
    return d if ext is None else d + ext.T[:, None, :]


def _normaliser(ghm: GHM, q: torch.Tensor) -> torch.Tensor:
    """``sum_v q`` over the value axis (1) of slot-layout probabilities, kept > 0."""
    total = q.sum(1, keepdim=True)
    return total.clamp_min(torch.finfo(q.dtype).tiny) if ghm._has_zeros[-1] else total


# ------------------------------------------------------------------------ posteriors


def root_message(
    ghm: GHM,
    leaves: torch.Tensor | None = None,
    *,
    noisy: torch.Tensor | None = None,
    sigma: float | None = None,
) -> torch.Tensor:
    """Upward root message ``h(root)`` = log p(leaves | root) + const per sample: ``[B, vocab]``
    (give observed ``leaves`` or ``noisy`` leaves); pass it as the other tree's ``root_message``."""
    return _upward(ghm, leaves, noisy, sigma, need="root").root.T


def _root_posterior(ghm, leaves=None, noisy=None, sigma=None, root_message=None) -> torch.Tensor:
    """Log root posterior laid out ``[V, B]``."""
    h = _upward(ghm, leaves, noisy, sigma, need="root").root
    h = h + _root_prior_message(ghm, root_message, h.shape[1])[:, 0]
    return torch.log_softmax(h, dim=0)


def root_posterior(
    ghm: GHM,
    leaves: torch.Tensor | None = None,
    *,
    noisy: torch.Tensor | None = None,
    sigma: float | None = None,
    root_message: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log root posterior ``log p(y | leaves) = log_softmax(h(root) + log p_y)``: ``[B, vocab]``."""
    return _root_posterior(ghm, leaves, noisy, sigma, root_message).T


def level_messages(
    ghm: GHM,
    leaves: torch.Tensor | None = None,
    *,
    noisy: torch.Tensor | None = None,
    sigma: float | None = None,
    expand_to_leaves: bool = False,
) -> list[torch.Tensor]:
    """Upward messages normalised per node, ``log_softmax(h(node))``, for levels
    ``l = 0..n_layer-1`` (root first): ``[B, n_child**l, vocab]``, or ``[B, n_leaves, vocab]``
    with each node's message repeated over its leaves if ``expand_to_leaves``."""
    up = _upward(ghm, leaves, noisy, sigma, need="below")
    out = [torch.log_softmax(h, dim=0).permute(2, 1, 0) for h in up.below]
    if expand_to_leaves:
        n, n_layer = ghm.config.n_child, ghm.config.n_layer
        out = [m.repeat_interleave(n ** (n_layer - lv), dim=1) for lv, m in enumerate(out)]
    return out


def _leaf_probs(ghm, noisy, sigma=None, root_message=None) -> torch.Tensor:
    """Unnormalised leaf posteriors ``[S, V, n_{L-1}, B]`` (slot layout): upward pass, then a
    downward pass whose message into a node excludes that node's own subtree."""
    up = _upward(ghm, noisy=noisy, sigma=sigma)
    out = _root_prior_message(ghm, root_message, up.root.shape[1])  # message into the root
    n_layer = ghm.config.n_layer
    for level in range(1, n_layer + 1):
        # parent belief without the evidence of the receiving child's own subtree
        pre = (out + up.below[level - 1])[None] - up.to_parent[level - 1]
        if level < n_layer:
            out = _push_down(ghm, level, pre)
    down = _down(ghm, n_layer, torch.exp(pre - pre.amax(1, keepdim=True)))
    return down * up.leaf_likelihood


def leaf_posterior(
    ghm: GHM,
    noisy: torch.Tensor,
    *,
    sigma: float | None = None,
    root_message: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log marginal posterior of every leaf given all noisy leaves (and ``root_message``),
    by an upward then a downward pass: ``[B, n_leaves, vocab]``."""
    q = _leaf_probs(ghm, noisy, sigma, root_message)
    return _from_leaf_slots(torch.log(q / _normaliser(ghm, q)))


def posterior_mean(
    ghm: GHM,
    noisy: torch.Tensor,
    *,
    sigma: float | None = None,
    root_message: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoising posterior mean ``E[x_j | z] = sum_v v p(x_j = v | z)``: ``[B, n_leaves]``."""
    q = _leaf_probs(ghm, noisy, sigma, root_message)
    s, v, n_par, b = q.shape
    values = torch.arange(v, device=ghm.device, dtype=ghm.dtype).expand(s, 1, v)
    mean = torch.bmm(values, q.view(s, v, n_par * b)).view(s, 1, n_par, b) / _normaliser(ghm, q)
    return mean[:, 0].permute(2, 1, 0).reshape(b, n_par * s)


def _next_token_probs(ghm, text, root_message=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised ``p(x_j | x_{<j}, root_message)`` for every leaf ``j`` ``[S, V, n_{L-1}, B]``
    (slot layout) and the checked ``[B, n_leaves]`` text."""
    n = ghm.n_leaves
    if isinstance(text, torch.Tensor) and text.dim() == 2 and text.shape[1] == n - 1:
        text = F.pad(text, (0, 1))  # the last leaf is never evidence
    text = _check_leaves(ghm, text, "text")
    up = _upward(ghm, text)
    d = _root_prior_message(ghm, root_message, text.shape[0])
    n_layer = ghm.config.n_layer
    for level in range(1, n_layer + 1):
        m = up.to_parent[level - 1]
        pre = d[None] + (torch.cumsum(m, dim=0) - m)  # + evidence of the left siblings
        if level < n_layer:
            d = _push_down(ghm, level, pre)
    return _down(ghm, n_layer, torch.exp(pre - pre.amax(1, keepdim=True))), text


def next_token_log_probs(
    ghm: GHM, text: torch.Tensor, *, root_message: torch.Tensor | None = None
) -> torch.Tensor:
    """``log p(x_{j+1} | x_{<=j}, root_message)`` for ``j = 0..n_leaves-2``: ``[B, n_leaves-1, vocab]``.

    ``text`` is ``[B, n_leaves]`` or the model input ``[B, n_leaves - 1]``; the output is
    aligned with ``text[:, 1:]``. One upward pass of the fully observed text, then one
    downward pass that carries, into every node, the evidence of all leaves to its left:
    ``D(a) = log sum_u exp(D(parent)(u) + sum_{c < slot(a)} m_c(u)) M_a[u, :]``.
    """
    q, _ = _next_token_probs(ghm, text, root_message)
    return _from_leaf_slots(torch.log(q / _normaliser(ghm, q)))[:, 1:]


def _next_token_nll(ghm, text, root_message=None) -> torch.Tensor:
    """Per-sample ``-mean_j log p(x_{j+1} | x_{<=j}, root_message)`` over ``j = 0..n-2``: ``[B]``."""
    q, text = _next_token_probs(ghm, text, root_message)
    target = _leaf_slots(ghm, text)[:, None]  # [S, 1, P, B]
    logp = torch.log(q.gather(1, target) / _normaliser(ghm, q))[:, 0]  # [S, P, B]
    total = logp.sum((0, 1)) - logp[0, 0]  # leaf 0 is not predicted
    return -total / (ghm.n_leaves - 1)


def first_leaf_log_probs(ghm: GHM, root_log_posterior: torch.Tensor) -> torch.Tensor:
    """Push a root posterior down the leftmost path: ``log(p(y|.) @ M_1 @ ... @ M_L)``, where
    ``M_l`` is the slot-0 matrix into the first node of level ``l``."""
    v = ghm.config.vocab
    if not isinstance(root_log_posterior, torch.Tensor) or root_log_posterior.dim() != 2:
        raise ValueError("root_log_posterior must have shape [B, vocab]")
    if root_log_posterior.shape[1] != v:
        raise ValueError(
            f"root_log_posterior must have shape [B, {v}], got {list(root_log_posterior.shape)}"
        )
    q = root_log_posterior.to(device=ghm.device, dtype=ghm.dtype).exp()
    for level in range(1, ghm.config.n_layer + 1):
        q = q @ ghm.transitions[level - 1][0, 0]
    return torch.log(q.clamp_min(torch.finfo(q.dtype).tiny))


def clip_log_score(
    log_post_text: torch.Tensor,
    log_post_image: torch.Tensor,
    log_prior: torch.Tensor,
    dim: int = -1,
) -> torch.Tensor:
    """Bayes CLIP score ``log S(t, i) = log sum_y p(y|t) p(y|i) / p(y)``,
    the value axis being ``dim``; broadcasts over the other dimensions."""
    vt, vi = log_post_text.shape[dim], log_post_image.shape[dim]
    if vt != vi or log_prior.numel() != vt:
        raise ValueError(
            "log_post_text, log_post_image and log_prior must have the same vocab size, got "
            f"{vt}, {vi} and {log_prior.numel()}"
        )
    shape = [1] * max(log_post_text.dim(), log_post_image.dim())
    shape[dim] = vt
    return torch.logsumexp(log_post_text + log_post_image - log_prior.view(shape), dim=dim)
