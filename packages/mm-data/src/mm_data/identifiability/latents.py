"""Latent model and invertible mixing of the multimodal identifiability simulation.

Daunhawer et al., "Identifiability Results for Multimodal Contrastive Learning", ICLR 2023,
section 5.1 (numerical simulation). Two views share content c; style s changes between views
by a random perturbation on a random subset of its dimensions; each view has its own
modality-specific part m1 / m2. Each view z = (c, s, m) is mixed by its own random invertible
MLP f1 / f2 into the observation x = f(z).

    cfg = LatentConfig(style_change_prob=0.75, statistical_dependence=True, seed=0)
    model = LatentModel(cfg)
    batch = model.sample(6144)
    f1, f2 = make_mixing(cfg.view_dim, seed=cfg.seed)
    x1, x2 = f1(batch.z1), f2(batch.z2)
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from torch import nn

__all__ = [
    "COVARIANCES",
    "InvertibleMLP",
    "LatentBatch",
    "LatentConfig",
    "LatentModel",
    "condition_threshold",
    "load_latent_params",
    "load_mixing",
    "make_mixing",
    "random_unit_column_matrices",
    "sample_wishart",
    "save_mixing",
]


COVARIANCES = ("equal", "independent")


@dataclass
class LatentConfig:
    """Latent structure of the simulation; every random parameter is drawn from `seed`."""

    content_n: int = 5
    style_n: int = 5
    modality_n: int = 5
    style_change_prob: float = 1.0
    c_param: float = 1.0  # standard deviation of the style change eps
    statistical_dependence: bool = False
    content_dependent_style: bool = False
    # Under statistical_dependence: "equal" = one Wishart draw per block size, shared by
    # every block of that size (the original code seeds every draw identically, and the
    # published numbers come from that model); "independent" = a draw of its own per block.
    covariances: Literal["equal", "independent"] = "equal"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("content_n", "style_n", "modality_n", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"LatentConfig.{name} must be an int, got {value!r}")
        if self.content_n < 1:
            raise ValueError(f"LatentConfig.content_n must be >= 1, got {self.content_n}")
        for name in ("style_n", "modality_n"):
            if getattr(self, name) < 0:
                raise ValueError(f"LatentConfig.{name} must be >= 0, got {getattr(self, name)}")
        p = self.style_change_prob
        if not isinstance(p, int | float) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"LatentConfig.style_change_prob must be in [0, 1], got {p!r}")
        c = self.c_param
        if not isinstance(c, int | float) or not math.isfinite(c) or c < 0:
            raise ValueError(f"LatentConfig.c_param must be finite and >= 0, got {c!r}")
        for name in ("statistical_dependence", "content_dependent_style"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"LatentConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.covariances not in COVARIANCES:
            raise ValueError(
                f"LatentConfig.covariances must be one of {COVARIANCES}, got {self.covariances!r}"
            )

    @property
    def view_dim(self) -> int:
        """Dimension of one view z = (c, s, m)."""
        return self.content_n + self.style_n + self.modality_n

    @classmethod
    def from_dict(cls, data: dict) -> LatentConfig:
        data = dict(data)
        if "equal_covariances" in data:  # mixing files written before `covariances`
            data["covariances"] = "equal" if data.pop("equal_covariances") else "independent"
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"LatentConfig: unknown fields {sorted(unknown)}")
        return cls(**data)


@dataclass
class LatentBatch:
    """One batch of paired latents; z1 = (c', s, m1), z2 = (c', s_tilde, m2).

    ``c_prime`` is the content that enters the mixing: ``c`` itself, or under the test-time
    intervention another sample's content, while the style keeps its dependence on ``c``.
    """

    c: torch.Tensor
    s: torch.Tensor
    s_tilde: torch.Tensor
    m1: torch.Tensor
    m2: torch.Tensor
    change_mask: torch.Tensor  # bool [B, style_n]: which style dims changed in the pair
    c_prime: torch.Tensor | None = None  # None: no intervention, c' = c

    @property
    def content_mixed(self) -> torch.Tensor:
        return self.c if self.c_prime is None else self.c_prime

    @property
    def z1(self) -> torch.Tensor:
        return torch.cat([self.content_mixed, self.s, self.m1], dim=1)

    @property
    def z2(self) -> torch.Tensor:
        return torch.cat([self.content_mixed, self.s_tilde, self.m2], dim=1)


def sample_wishart(dim: int, generator: torch.Generator, df: int | None = None) -> torch.Tensor:
    """Wishart(df, I) draw W = X^T X with X [df, dim] standard normal (df defaults to dim)."""
    df = dim if df is None else df
    x = torch.randn(df, dim, generator=generator, dtype=torch.float64)
    return x.T @ x


PARAM_NAMES = ("cov_content", "cov_style", "cov_m1", "cov_m2", "cov_style_change", "B", "a")


class LatentModel:
    """Draws the fixed parameters of the latent model from `cfg.seed` and samples batches.

    Parameters (all fixed per run, drawn from one generator in this order):
    - under `statistical_dependence`: covariances Sigma_c, Sigma_s, Sigma_m1, Sigma_m2 and
      Sigma_a (style change), Wishart(df=dim, I) draws; with ``covariances="equal"`` (the
      default, the original code's model) every draw comes from a generator seeded with
      `seed`, so blocks of one size share one matrix; with "independent" each is its own
      draw. Otherwise all identities and the style change is N(0, c_param^2 I);
    - under `content_dependent_style`: B [style_n, content_n] and a [style_n], standard normal.

    ``params`` (from `parameters()`, e.g. saved with the mixing) replaces the draws, so a
    run is evaluated on exactly the latent model it was trained on.
    """

    def __init__(self, cfg: LatentConfig, params: dict[str, torch.Tensor | None] | None = None):
        self.cfg = cfg
        drawn = self._draw(cfg) if params is None else self._checked(cfg, params)
        self.cov_content, self.cov_style, self.cov_m1, self.cov_m2 = (
            drawn["cov_content"], drawn["cov_style"], drawn["cov_m1"], drawn["cov_m2"],
        )  # fmt: skip
        self.cov_style_change = drawn["cov_style_change"]
        self.B, self.a = drawn["B"], drawn["a"]
        self._covs = {
            "c": self.cov_content, "s": self.cov_style, "m1": self.cov_m1,
            "m2": self.cov_m2, "a": self.cov_style_change,
        }  # fmt: skip
        self._chol = {
            k: None if v is None else torch.linalg.cholesky(v) for k, v in self._covs.items()
        }
        self._on_device: dict[str, dict[str, torch.Tensor | None]] = {}
        # Batches come from their own stream so that parameters and data never share draws.
        self.generator = torch.Generator().manual_seed(cfg.seed + 1_000_003)

    @staticmethod
    def _draw(cfg: LatentConfig) -> dict[str, torch.Tensor | None]:
        g = torch.Generator().manual_seed(cfg.seed)
        nc, ns, nm = cfg.content_n, cfg.style_n, cfg.modality_n
        out: dict[str, torch.Tensor | None] = dict.fromkeys(PARAM_NAMES)
        if cfg.statistical_dependence:

            def wishart(dim: int) -> torch.Tensor | None:
                if dim == 0:
                    return None
                if cfg.covariances == "equal":  # a fresh generator per draw: equal per size
                    return sample_wishart(dim, torch.Generator().manual_seed(cfg.seed))
                return sample_wishart(dim, g)

            for name, dim in (
                ("cov_content", nc), ("cov_style", ns), ("cov_m1", nm), ("cov_m2", nm),
                ("cov_style_change", ns),
            ):  # fmt: skip
                out[name] = wishart(dim)
        if cfg.content_dependent_style:
            out["B"] = torch.randn(ns, nc, generator=g).double()
            out["a"] = torch.randn(ns, generator=g).double()
        return out

    @staticmethod
    def _checked(cfg: LatentConfig, params: dict) -> dict[str, torch.Tensor | None]:
        nc, ns, nm = cfg.content_n, cfg.style_n, cfg.modality_n
        shapes = {
            "cov_content": (nc, nc), "cov_style": (ns, ns), "cov_m1": (nm, nm),
            "cov_m2": (nm, nm), "cov_style_change": (ns, ns), "B": (ns, nc), "a": (ns,),
        }  # fmt: skip
        unknown = set(params) - set(PARAM_NAMES)
        if unknown:
            raise ValueError(f"LatentModel params: unknown names {sorted(unknown)}")
        out = {}
        for name in PARAM_NAMES:
            value = params.get(name)
            wanted = (
                cfg.content_dependent_style
                if name in ("B", "a")
                else (cfg.statistical_dependence and math.prod(shapes[name]) > 0)
            )
            if (value is not None) != wanted:
                raise ValueError(
                    f"LatentModel params: {name} is {'missing' if wanted else 'given'}, but "
                    f"the config has statistical_dependence={cfg.statistical_dependence}, "
                    f"content_dependent_style={cfg.content_dependent_style}"
                )
            if value is not None:
                if tuple(value.shape) != shapes[name]:
                    raise ValueError(
                        f"LatentModel params: {name} has shape {tuple(value.shape)}, the "
                        f"config needs {shapes[name]}"
                    )
                value = value.detach().to("cpu", torch.float64)
            out[name] = value
        return out

    def parameters(self) -> dict[str, torch.Tensor | None]:
        """The fixed parameters (float64 CPU tensors, None where off): what `params` takes."""
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def covariance(self, block: str) -> torch.Tensor:
        """The covariance that `sample` uses for `block` (c, s, m1, m2, or a for the style
        change eps), float64: the drawn Wishart matrix, else I (c_param^2 I for a).

        For s it is the covariance before content-dependent style adds B c + a.
        """
        if block not in self._chol:
            raise ValueError(f"unknown block {block!r}; choose from {list(self._chol)}")
        drawn = self._covs[block]
        if drawn is not None:
            return drawn.double()
        cfg = self.cfg
        dim = {"c": cfg.content_n, "s": cfg.style_n, "a": cfg.style_n}.get(block, cfg.modality_n)
        scale = cfg.c_param**2 if block == "a" else 1.0
        return scale * torch.eye(dim, dtype=torch.float64)

    def _params_on(self, device: torch.device) -> dict[str, torch.Tensor | None]:
        """Cholesky factors and B, a on `device` (moved once per device)."""
        key = str(device)
        if key not in self._on_device:
            tensors = {f"chol_{k}": v for k, v in self._chol.items()} | {"B": self.B, "a": self.a}
            self._on_device[key] = {
                k: None if v is None else v.to(device) for k, v in tensors.items()
            }
        return self._on_device[key]

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, *, intervene: bool = False
    ) -> LatentBatch:
        """Sample `batch_size` pairs on the generator's device (the model's own generator,
        on the CPU, unless one is given).

        ``intervene``: the test-time intervention on the content. The style is drawn from
        c as usual, then the content that enters the mixing is replaced by another
        sample's (a random permutation of the batch): ``batch.c_prime``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        g = self.generator if generator is None else generator
        dev = g.device
        p = self._params_on(dev)
        cfg = self.cfg
        n, nc, ns, nm = batch_size, cfg.content_n, cfg.style_n, cfg.modality_n

        def gaussian(dim: int, key: str) -> torch.Tensor:
            """x = L eps with L L^T = Sigma (identity when no covariance was drawn)."""
            eps = torch.randn(n, dim, generator=g, dtype=torch.float64, device=dev)
            chol = p[f"chol_{key}"]
            return eps if chol is None else eps @ chol.T

        c = gaussian(nc, "c")
        s = gaussian(ns, "s")
        if p["B"] is not None:
            # Content-dependent style: s <- s + B c + a.
            s = s + c @ p["B"].T + p["a"]
        mask = torch.rand(n, ns, generator=g, device=dev) < cfg.style_change_prob
        if p["chol_a"] is not None:
            eps = gaussian(ns, "a")
        else:
            eps = cfg.c_param * torch.randn(n, ns, generator=g, dtype=torch.float64, device=dev)
        s_tilde = s + mask.double() * eps
        m1 = gaussian(nm, "m1")
        m2 = gaussian(nm, "m2")
        c_prime = None
        if intervene:
            c_prime = c[torch.randperm(n, generator=g, device=dev)].float()
        return LatentBatch(
            c=c.float(),
            s=s.float(),
            s_tilde=s_tilde.float(),
            m1=m1.float(),
            m2=m2.float(),
            change_mask=mask,
            c_prime=c_prime,
        )


def random_unit_column_matrices(count: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """[count, n, n] matrices with U(-1, 1) entries and L2-normalised columns."""
    w = torch.rand(count, n, n, generator=generator, dtype=torch.float64) * 2 - 1
    return w / torch.linalg.vector_norm(w, dim=1, keepdim=True)


@functools.lru_cache(maxsize=64)
def condition_threshold(
    n: int, seed: int = 0, num_matrices: int = 25_000, quantile: float = 0.001
) -> float:
    """Quantile (0.1% by default) of cond(W) over `num_matrices` random unit-column W [n, n]."""
    g = torch.Generator().manual_seed(seed)
    conds = torch.cat(
        [
            torch.linalg.cond(random_unit_column_matrices(min(5000, num_matrices - i), n, g))
            for i in range(0, num_matrices, 5000)
        ]
    )
    return float(torch.quantile(conds, quantile))


def _well_conditioned_matrix(n: int, threshold: float, generator: torch.Generator) -> torch.Tensor:
    """First matrix of the random sequence with cond(W) < threshold (rejection sampling)."""
    for _ in range(1000):
        w = random_unit_column_matrices(2048, n, generator)
        ok = torch.nonzero(torch.linalg.cond(w) < threshold)
        if len(ok):
            return w[int(ok[0])]
    raise RuntimeError(f"no {n}x{n} matrix with condition number below {threshold} was found")


class InvertibleMLP(nn.Module):
    """x = W_L g(... g(W_1 z)) with g = LeakyReLU(slope), bias-free square W_k; frozen.

    Each W_k has U(-1, 1) entries with L2-normalised columns, resampled until its condition
    number is below the 0.1% quantile of condition numbers of 25,000 such random matrices
    (Zimmermann et al., ICML 2021, appendix; Daunhawer et al., ICLR 2023, section 5.1).
    """

    def __init__(
        self,
        n: int,
        n_layers: int = 3,
        negative_slope: float = 0.2,
        generator: torch.Generator | None = None,
        threshold_seed: int = 0,
        weights: list[torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        if not negative_slope > 0.0:
            raise ValueError(f"negative_slope must be > 0 to be invertible, got {negative_slope}")
        self.n = n
        self.n_layers = n_layers
        self.negative_slope = float(negative_slope)
        if weights is None:
            threshold = condition_threshold(n, threshold_seed)
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            weights = [_well_conditioned_matrix(n, threshold, g) for _ in range(n_layers)]
        else:
            shapes = [tuple(w.shape) for w in weights]
            if shapes != [(n, n)] * n_layers:
                raise ValueError(
                    f"weights must be {n_layers} matrices of shape ({n}, {n}), got {shapes}"
                )
            threshold = float("nan")
        # The acceptance threshold travels with the weights in state_dict().
        self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float64))
        self.layers = nn.ModuleList()
        for w in weights:
            layer = nn.Linear(n, n, bias=False)
            with torch.no_grad():
                layer.weight.copy_(w)
            layer.weight.requires_grad_(False)
            self.layers.append(layer)
        self.act = nn.LeakyReLU(self.negative_slope)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.n:
            raise ValueError(f"InvertibleMLP expects last dim {self.n}, got shape {tuple(z.shape)}")
        x = z
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < self.n_layers - 1:
                x = self.act(x)
        return x

    def leaky_relu_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """g^-1(y) = y for y >= 0, y / slope for y < 0."""
        return torch.where(y >= 0, y, y / self.negative_slope)

    @torch.no_grad()
    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """z = f^-1(x), solving W_k h_{k-1} = h_k layer by layer (float64)."""
        h = x.double()
        for k in reversed(range(self.n_layers)):
            if k < self.n_layers - 1:
                h = self.leaky_relu_inverse(h)
            w = self.layers[k].weight.double()
            h = torch.linalg.solve(w, h.T).T
        return h.to(x.dtype)

    def condition_numbers(self) -> list[float]:
        return [float(torch.linalg.cond(layer.weight.double())) for layer in self.layers]


def make_mixing(
    n: int,
    *,
    n_layers: int = 3,
    negative_slope: float = 0.2,
    shared: bool = False,
    seed: int = 0,
) -> tuple[InvertibleMLP, InvertibleMLP]:
    """Mixing functions (f1, f2) for the two views: independent draws, or f2 is f1 if shared."""
    g = torch.Generator().manual_seed(seed)
    f1 = InvertibleMLP(n, n_layers, negative_slope, generator=g, threshold_seed=seed)
    f2 = (
        f1
        if shared
        else InvertibleMLP(n, n_layers, negative_slope, generator=g, threshold_seed=seed)
    )
    return f1, f2


def save_mixing(
    path: str | Path,
    f1: InvertibleMLP,
    f2: InvertibleMLP,
    cfg: LatentConfig | None = None,
    latent_params: dict[str, torch.Tensor | None] | None = None,
) -> Path:
    """Save both mixing functions (weights + hyperparameters), the latent config and the
    latent model's drawn parameters (`LatentModel.parameters()`: covariances, B, a), into a
    temporary file renamed over `path` (atomic)."""
    path = Path(path)
    for name, f in (("f1", f1), ("f2", f2)):
        if not isinstance(f, InvertibleMLP):
            raise ValueError(
                f"save_mixing: {name} must be an InvertibleMLP, got {type(f).__name__}"
            )
    if f1.n != f2.n:
        raise ValueError(f"save_mixing: f1 and f2 have different dims ({f1.n} vs {f2.n})")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "n": f1.n,
        "n_layers": [f1.n_layers, f2.n_layers],
        "negative_slope": [f1.negative_slope, f2.negative_slope],
        "shared": f1 is f2,
        "f1": {k: v.cpu() for k, v in f1.state_dict().items()},
        "f2": {k: v.cpu() for k, v in f2.state_dict().items()},
        "latent_config": asdict(cfg) if cfg is not None else None,
        "latent_params": None
        if latent_params is None
        else {k: None if v is None else v.detach().cpu() for k, v in latent_params.items()},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # atomic: no half-written file
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _restore(path: Path, which: str, n: int, n_layers: int, slope: float, state: dict):
    expected = {"threshold": ()} | {f"layers.{k}.weight": (n, n) for k in range(n_layers)}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise ValueError(
            f"load_mixing: {path}: {which} weights do not match a {n_layers}-layer "
            f"{n}x{n} InvertibleMLP (expected {expected}, found {found})"
        )
    weights = [state[f"layers.{k}.weight"] for k in range(n_layers)]
    f = InvertibleMLP(n, n_layers, slope, weights=weights)
    f.load_state_dict(state)
    return f


def _read_payload(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"load_mixing: no mixing file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"load_mixing: {path} is not a readable mixing file ({err})") from err
    keys = {"n", "n_layers", "negative_slope", "shared", "f1", "f2"}
    if not isinstance(payload, dict) or not keys <= set(payload):
        raise ValueError(f"load_mixing: {path} is not a mixing file written by save_mixing")
    return payload


def load_latent_params(path: str | Path) -> dict[str, torch.Tensor | None] | None:
    """The latent parameters saved with the mixing (None for files written without them)."""
    return _read_payload(Path(path)).get("latent_params")


def load_mixing(
    path: str | Path, expected_cfg: LatentConfig | None = None
) -> tuple[InvertibleMLP, InvertibleMLP, LatentConfig | None]:
    """Load (f1, f2, latent config) written by `save_mixing`; f2 is f1 if saved shared.

    With `expected_cfg`, the stored mixing dimension must equal `expected_cfg.view_dim`.
    """
    path = Path(path)
    payload = _read_payload(path)
    n = int(payload["n"])
    if expected_cfg is not None and expected_cfg.view_dim != n:
        raise ValueError(
            f"load_mixing: {path} holds {n}-dim mixing, but the config's view dim is "
            f"{expected_cfg.view_dim}"
        )
    fs = []
    for i, which in enumerate(("f1", "f2")):
        n_layers, slope = payload["n_layers"][i], payload["negative_slope"][i]
        fs.append(_restore(path, which, n, n_layers, slope, payload[which]))
    f1, f2 = fs[0], (fs[0] if payload["shared"] else fs[1])
    cfg_dict = payload.get("latent_config")
    cfg = LatentConfig.from_dict(cfg_dict) if cfg_dict is not None else None
    return f1, f2, cfg
