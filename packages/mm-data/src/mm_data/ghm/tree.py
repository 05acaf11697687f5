"""GHM specification: the config, the random tree structure and its transition matrices.

A generative hierarchical model (GHM; Oko, Lin, Cai, Mei, arXiv 2501.04641, Sec. 4) is a
rooted tree with ``n_layer`` levels below the root; every node has ``n_child`` children
and takes a value in ``{0..vocab-1}``. Level ``l`` (root = level 0) holds
``n_child**l`` nodes, numbered left to right; node ``k`` of level ``l`` is child slot
``k % n_child`` of node ``k // n_child`` of level ``l - 1``. The leaves (level
``n_layer``) in this order are the token sequence of a modality.

Each edge carries a row-stochastic matrix ``M[parent_value, child_value]``::

    M = (1 - p) * P + p * softmax_row(G),   P a permutation matrix, G ~ N(0, flip_scale^2)

Translation invariant (default): one ``P`` per level and one ``G`` per child slot per
level, shared by all parents of the level. Otherwise every edge (parent, slot) draws its
own ``P`` and ``G``. ``P`` and ``G`` come from ``tree_seed`` only, so changing ``p``
(:meth:`GHM.with_p`) keeps the tree and moves only the mixing weight.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

MODALITIES = ("text", "image")
_MAX_COMBO_SAMPLER = 1 << 20  # entries of a level's joint-children alias table


@dataclass
class GHMConfig:
    """Shape and randomness of a (joint) GHM; defaults are the paper setting."""

    n_layer: int = 4
    n_child: int = 3
    vocab: int = 10
    p: float = 0.2
    flip_scale: float = 1.0
    tree_seed: int = 42
    translation_invariant: bool = True
    sigma: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field with a bad value."""
        for name, low in (("n_layer", 1), ("n_child", 1), ("vocab", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"GHMConfig.{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.tree_seed, int) or isinstance(self.tree_seed, bool):
            raise ValueError(f"GHMConfig.tree_seed must be an integer, got {self.tree_seed!r}")
        if not (isinstance(self.p, int | float) and 0.0 <= self.p <= 1.0):
            raise ValueError(f"GHMConfig.p must be in [0, 1], got {self.p!r}")
        if not (isinstance(self.flip_scale, int | float) and self.flip_scale >= 0.0):
            raise ValueError(f"GHMConfig.flip_scale must be >= 0, got {self.flip_scale!r}")
        if not (isinstance(self.sigma, int | float) and self.sigma > 0.0):
            raise ValueError(f"GHMConfig.sigma must be > 0, got {self.sigma!r}")

    @property
    def n_leaves(self) -> int:
        """Number of leaves ``n_child ** n_layer``."""
        return self.n_child**self.n_layer

    def level_size(self, level: int) -> int:
        """Number of nodes on ``level`` (root = 0)."""
        return self.n_child**level


@dataclass(frozen=True)
class _Structure:
    """The p-independent part of one tree: per level l = 1..n_layer, the permutation
    (child value of each parent value) and softmax(G), one per edge group and slot."""

    permutations: tuple[torch.Tensor, ...]  # [groups, n_child, vocab] int64
    noise: tuple[torch.Tensor, ...]  # [groups, n_child, vocab, vocab] float64, rows sum to 1


def _draw_structure(config: GHMConfig, generator: torch.Generator) -> _Structure:
    """Draw P and softmax(G) for every level of one tree (level 1 first, P before G)."""
    v, s = config.vocab, config.n_child
    perms, noise = [], []
    for level in range(1, config.n_layer + 1):
        if config.translation_invariant:
            perm = torch.randperm(v, generator=generator).expand(1, s, v)
            g = torch.randn(1, s, v, v, generator=generator, dtype=torch.float64)
        else:
            groups = config.level_size(level - 1)
            keys = torch.rand(groups * s, v, generator=generator, dtype=torch.float64)
            perm = torch.argsort(keys, dim=-1).reshape(groups, s, v)
            g = torch.randn(groups, s, v, v, generator=generator, dtype=torch.float64)
        perms.append(perm.contiguous())
        noise.append(torch.softmax(g * config.flip_scale, dim=-1))
    return _Structure(tuple(perms), tuple(noise))


def _alias_tables(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker's alias tables (Vose 1991) for each row of ``probs`` ``[R, n]``: draw
    ``j ~ U{0..n-1}``, keep ``j`` with probability ``accept[j]``, else take ``alias[j]``."""
    n = probs.shape[1]
    accept, alias = [], []
    for row in (probs / probs.sum(1, keepdim=True) * n).tolist():
        acc, al = [1.0] * n, list(range(n))  # leftovers (round-off) keep accept = 1
        small = [i for i, q in enumerate(row) if q < 1.0]
        large = [i for i, q in enumerate(row) if q >= 1.0]
        while small and large:
            lo, hi = small.pop(), large.pop()
            acc[lo], al[lo] = row[lo], hi
            row[hi] -= 1.0 - row[lo]
            (small if row[hi] < 1.0 else large).append(hi)
        accept.append(acc)
        alias.append(al)
    return torch.tensor(accept, dtype=torch.float64), torch.tensor(alias, dtype=torch.long)


@dataclass(frozen=True)
class _ComboSampler:
    """Alias tables over the ``V^S`` joint values of the ``S`` children of one parent (rows
    ``group * V + parent value``), so a level costs one draw per parent, not per child."""

    accept: torch.Tensor  # [groups * V * C] float64
    alias: torch.Tensor  # [groups * V * C] int64
    row_base: torch.Tensor  # [n_parents]: group * V * C
    digits: torch.Tensor  # [C, S]: child values of combination c
    n_combos: int


class GHM:
    """One tree of a GHM: transition matrices per level, on a device, in a float dtype.

    ``transitions[l - 1]`` has shape ``[groups, n_child, vocab, vocab]`` and holds the
    matrices from level ``l - 1`` to level ``l``; ``groups`` is 1 when translation
    invariant, else ``n_child**(l - 1)`` (one per parent node). :meth:`matrix` gives the
    matrix of a single child node. Build with ``GHM(config)`` (the same tree as
    ``JointGHM(config).text``) or take ``joint.text`` / ``joint.image``.
    """

    def __init__(
        self,
        config: GHMConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        _structure: _Structure | None = None,
    ) -> None:
        config.validate()
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
        if _structure is None:
            _structure = _draw_structure(config, torch.Generator().manual_seed(config.tree_seed))
        self.config = config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self._structure = _structure
        v, s, n_layer = config.vocab, config.n_child, config.n_layer
        tiny = torch.finfo(dtype).tiny
        eye = torch.eye(v, dtype=torch.float64)
        self.transitions: list[torch.Tensor] = []  # [groups, n_child, vocab, vocab] per level
        self.log_transitions: list[torch.Tensor] = []
        # private tables for the samplers and BP, one entry per level 1..n_layer
        self._row_base: list[torch.Tensor] = []  # [n_parents, n_child]: (group*S + slot)*V
        self._alias_accept: list[torch.Tensor] = []  # [groups*S*V*V] flat alias tables
        self._alias_index: list[torch.Tensor] = []
        self._has_zeros: list[bool] = []  # some entry of the level's matrices is ~0 (p = 0)
        self._bmm_up: list[torch.Tensor] = []  # [S, V, V] (translation invariant only)
        self._bmm_down: list[torch.Tensor] = []  # [S, V, V] transposed
        m64s: list[torch.Tensor] = []
        for level in range(1, n_layer + 1):
            perm, noise = _structure.permutations[level - 1], _structure.noise[level - 1]
            m64 = (1.0 - config.p) * eye[perm] + config.p * noise
            m64s.append(m64)
            m = m64.to(device=self.device, dtype=dtype)
            self.transitions.append(m)
            self.log_transitions.append(torch.log(m.clamp_min(tiny)))
            self._has_zeros.append(bool(m.min() <= tiny))
            groups, n_par = m.shape[0], config.level_size(level - 1)
            group = torch.arange(n_par) if groups > 1 else torch.zeros(n_par, dtype=torch.long)
            base = (group[:, None] * s + torch.arange(s)[None, :]) * v
            self._row_base.append(base.to(self.device))
            accept, alias = _alias_tables(m64.reshape(-1, v))
            self._alias_accept.append(accept.reshape(-1).to(device=self.device, dtype=dtype))
            self._alias_index.append(alias.reshape(-1).to(self.device))
            self._bmm_up.append(m[0].contiguous())
            self._bmm_down.append(m[0].transpose(-1, -2).contiguous())
        self._m64 = m64s  # float64 matrices per level, for tables built on first use
        self._combo_samplers: dict[int, _ComboSampler | None] = {}
        self.log_prior = torch.full((v,), -math.log(v), device=self.device, dtype=dtype)

    def _combo_sampler(self, level: int) -> _ComboSampler | None:
        """Joint-children alias tables of ``level`` (built on first use; None if too big)."""
        if level in self._combo_samplers:
            return self._combo_samplers[level]
        cfg = self.config
        v, s = cfg.vocab, cfg.n_child
        m64 = self._m64[level - 1]  # [G, S, V, V]
        groups, combos = m64.shape[0], v**s
        sampler = None
        if groups * v * combos <= _MAX_COMBO_SAMPLER:
            joint = m64[:, 0]
            for slot in range(1, s):
                joint = (joint[:, :, :, None] * m64[:, slot][:, :, None, :]).flatten(2)
            accept, alias = _alias_tables(joint.reshape(-1, combos))
            n_par = cfg.level_size(level - 1)
            group = torch.arange(n_par) if groups > 1 else torch.zeros(n_par, dtype=torch.long)
            c = torch.arange(combos)
            digits = torch.stack([(c // v ** (s - 1 - i)) % v for i in range(s)], dim=1)
            sampler = _ComboSampler(
                accept=accept.reshape(-1).to(self.device),
                alias=alias.reshape(-1).to(self.device),
                row_base=(group * v * combos).to(self.device),
                digits=digits.to(self.device),
                n_combos=combos,
            )
        self._combo_samplers[level] = sampler
        return sampler

    @property
    def n_leaves(self) -> int:
        """Number of leaves."""
        return self.config.n_leaves

    def matrix(self, level: int, node: int) -> torch.Tensor:
        """Transition matrix ``[vocab, vocab]`` into node ``node`` of level ``level`` (>= 1)."""
        if not 1 <= level <= self.config.n_layer:
            raise ValueError(f"level must be in [1, {self.config.n_layer}], got {level}")
        if not 0 <= node < self.config.level_size(level):
            raise ValueError(f"node must be in [0, {self.config.level_size(level)}), got {node}")
        t = self.transitions[level - 1]
        parent, slot = divmod(node, self.config.n_child)
        return t[parent if t.shape[0] > 1 else 0, slot]

    def with_p(self, p: float) -> GHM:
        """The same tree (same P and G) with flip probability ``p``."""
        cfg = dataclasses.replace(self.config, p=p)
        return GHM(cfg, device=self.device, dtype=self.dtype, _structure=self._structure)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GHM:
        """The same tree with its tables on ``device`` in ``dtype``."""
        return GHM(
            self.config,
            device=self.device if device is None else device,
            dtype=self.dtype if dtype is None else dtype,
            _structure=self._structure,
        )

    def __repr__(self) -> str:
        return f"GHM({self.config}, device={self.device}, dtype={self.dtype})"


class JointGHM:
    """Two trees of the same shape, ``text`` and ``image``, sharing one root value.

    Their structures are drawn one after the other (text first) from one generator
    seeded with ``config.tree_seed``; the root prior is uniform.
    """

    def __init__(
        self,
        config: GHMConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        _structures: tuple[_Structure, _Structure] | None = None,
    ) -> None:
        config.validate()
        if _structures is None:
            gen = torch.Generator().manual_seed(config.tree_seed)
            _structures = (_draw_structure(config, gen), _draw_structure(config, gen))
        self.config = config
        self._structures = _structures
        self.text = GHM(config, device=device, dtype=dtype, _structure=_structures[0])
        self.image = GHM(config, device=device, dtype=dtype, _structure=_structures[1])

    @property
    def device(self) -> torch.device:
        """Device of the tables."""
        return self.text.device

    @property
    def dtype(self) -> torch.dtype:
        """Float dtype of the tables."""
        return self.text.dtype

    @property
    def log_prior(self) -> torch.Tensor:
        """Log root prior ``[vocab]`` (uniform)."""
        return self.text.log_prior

    def modality(self, name: str) -> GHM:
        """The tree of modality ``"text"`` or ``"image"``."""
        if name not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {name!r}")
        return self.text if name == "text" else self.image

    def with_p(self, p: float) -> JointGHM:
        """The same two trees with flip probability ``p``."""
        cfg = dataclasses.replace(self.config, p=p)
        return JointGHM(cfg, device=self.device, dtype=self.dtype, _structures=self._structures)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> JointGHM:
        """The same two trees with their tables on ``device`` in ``dtype``."""
        return JointGHM(
            self.config,
            device=self.device if device is None else device,
            dtype=self.dtype if dtype is None else dtype,
            _structures=self._structures,
        )

    def __repr__(self) -> str:
        return f"JointGHM({self.config}, device={self.device}, dtype={self.dtype})"
