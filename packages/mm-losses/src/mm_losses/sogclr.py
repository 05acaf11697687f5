"""The SogCLR family: global contrastive losses with per-sample moving-average state.

Registered names: ``sogclr`` (Yuan et al. 2022, arXiv 2202.12387), ``isogclr`` (Qiu et
al. 2023, arXiv 2305.11965), ``info_sogclr`` (SogCLR + VICReg-style covariance/variance
regularisers) and ``hybrid_sogclr`` (SogCLR with an adaptive global temperature and a
difficulty term).

Notation (one global batch of N pairs, all ranks concatenated): S_ij = <x_i, t_j>,
h^I_ij = S_ij - S_ii for image anchor i, h^T_ij = S_ij - S_jj for text anchor j. Every
anchor k keeps, per modality, a running max ``b_k`` (in units of h / tau) and a moving
average ``s_k`` of mean_{j != k} exp(h_kj / tau - b_k); the loss is the surrogate
mean_k sum_j w_kj h_kj / (N-1) with constant weights w_kj = exp(h_kj / tau - b_k) / s_k,
whose gradient is tau * grad(mean_j exp(h_kj / tau)) / (moving average), i.e. the
gradient of tau * log mean_j exp(h_kj / tau) with the inner mean replaced by its moving
average.

Implementation notes. Everything is computed in (at least) float32 with autocast off.
The N x N similarity matrix is computed once without gradient; the surrogate is linear in
S, sum_kj C_kj S_kj with a constant coefficient matrix C (the weights, with the -S_kk
part of h folded into the diagonal), so its backward is two matmuls (C T, C^T X) and no
graph over N x N intermediates is kept. The per-sample state of every anchor of the
global batch is computed by the rank that owns it and all-gathered, so all ranks write
identical state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mm_losses.base import ContrastiveLoss
from mm_losses.distributed import all_gather_no_grad
from mm_losses.registry import register

_TINY = torch.finfo(torch.float32).tiny  # floor of s: only reached when every exp underflows


# ----------------------------------------------------------------------------- schedules


def gamma_at(epoch: int, gamma: float, schedule: str, decay_epochs: int | None) -> float:
    """Moving-average weight for ``epoch``: constant, or cosine from 1 down to ``gamma``.

    Cosine gamma schedule of FastCLIP (Wei et al. 2024, arXiv 2407.01445; LibAUC 1.4):
    gamma_e = gamma + (1 - gamma) * (1 + cos(pi * e / E)) / 2 for e < E, then gamma.
    """
    if schedule == "const":
        return gamma
    if epoch >= decay_epochs:
        return gamma
    return gamma + (1.0 - gamma) * 0.5 * (1.0 + math.cos(math.pi * epoch / decay_epochs))


def eta_at(
    epoch: int, eta: float, schedule: str, decay_epochs: int | None, decay_rate: float
) -> float:
    """Temperature step size for ``epoch`` (iSogCLR, Qiu et al. 2023, Alg. 1 step size).

    ``const``: eta; ``cosine``: eta * (1 + cos(pi * min(e, E) / E)) / 2;
    ``exp``: eta * decay_rate ** e.
    """
    if schedule == "const":
        return eta
    if schedule == "cosine":
        return eta * 0.5 * (1.0 + math.cos(math.pi * min(epoch, decay_epochs) / decay_epochs))
    return eta * decay_rate**epoch


# ------------------------------------------------------------------------ regularisers


def variance_hinge(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean_d relu(1 - sqrt(Var(z_d) + eps)) (VICReg, Bardes et al. 2022, Eq. 1)."""
    return F.relu(1.0 - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_penalty(z: torch.Tensor) -> torch.Tensor:
    """sum_{k != l} Cov(z)_kl^2 / dim, Cov = z_c^T z_c / (n-1) (VICReg, Bardes et al. 2022, Eq. 3-4)."""
    n, dim = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / dim


def difficulty_term(x: torch.Tensor, t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """-mean_ij(S_ij / tau * p_i q_j), p = softmax_i ||x_i - mean x||, q likewise for t.

    HybridSogCLR's difficulty term (spec sogclr.md, section 3), evaluated without the
    N x N matrix: sum_ij S_ij p_i q_j = <X^T p, T^T q>.
    """
    n = x.shape[0]
    p = torch.softmax(torch.linalg.vector_norm(x - x.mean(dim=0), dim=1), dim=0)
    q = torch.softmax(torch.linalg.vector_norm(t - t.mean(dim=0), dim=1), dim=0)
    return -torch.dot(x.T @ p, t.T @ q) / (n * n * tau)


# ----------------------------------------------------------------- surrogate autograd op


class _LinearInSimilarity(torch.autograd.Function):
    """value = sum_kj C_kj <p_k, q_j> for a constant C; backward C q and C^T p.

    ``value`` is computed by the caller (it already has the similarities), so the forward
    only saves p, q and C; nothing of size N x N is recomputed or kept besides C.
    """

    @staticmethod
    def forward(ctx, p, q, coef, value):
        ctx.save_for_backward(p, q, coef)
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        p, q, coef = ctx.saved_tensors
        grad_p = grad_q = None
        with torch.autocast(device_type=p.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_p = (coef @ q).mul_(grad)
            if ctx.needs_input_grad[1]:
                grad_q = (coef.T @ p).mul_(grad)
        return grad_p, grad_q, None, None


# ---------------------------------------------------------------------- one modality


class _Side:
    """State update and surrogate coefficients for the anchors of one modality."""

    __slots__ = ("b", "coef", "g", "pos", "s", "value")


@torch.no_grad()
def _moving_average_side(
    sim: torch.Tensor,
    offset: int,
    inv_tau: torch.Tensor,
    b_old: torch.Tensor,
    s_old: torch.Tensor,
    seen: torch.Tensor,
    gamma: float,
    num_anchors_local: int,
    want_values: bool,
) -> _Side:
    """SogCLR moving-average estimator (Yuan et al. 2022, Alg. 1) for rows of ``sim``.

    Row r of ``sim`` [R, N] holds the similarities of anchor r to all N candidates; its
    positive sits at column ``offset + r``. z = h / tau, b <- max(b, max_{j != r} z_rj),
    e_rj = exp(z_rj - b_r), g_r = sum_j e_rj / (N-1), s_r = g_r on a first visit, else
    (1 - gamma) s_r exp(b_old - b_new) + gamma g_r. Returns the surrogate coefficients
    C_rj = e_rj / (s_r R (N-1)) with C_rr = -sum_j C_rj (the -S_rr part of h), so that
    sum_j C_rj S_rj = sum_j w_rj h_rj / (R (N-1)).
    """
    n = sim.shape[1]
    diag = sim.diagonal(offset)
    pos = diag.clone()
    diag.fill_(-math.inf)  # max over the negatives only: the tightest stabiliser
    neg_max = sim.amax(dim=1)
    diag.copy_(pos)

    z_max = (neg_max - pos) * inv_tau
    b_new = torch.where(seen, torch.maximum(b_old, z_max), z_max)
    # e = exp(S * inv_tau - (pos * inv_tau + b)): one fused pass, then exp in place
    e = torch.empty_like(sim)
    torch.addcmul((pos * inv_tau + b_new).neg_().unsqueeze(1), sim, inv_tau.unsqueeze(1), out=e)
    e.diagonal(offset).fill_(-math.inf)
    e.exp_()
    row_sum = e.sum(dim=1)
    g = row_sum / (n - 1)
    b_prev = torch.where(seen, b_old, b_new)
    s_new = torch.where(seen, (1.0 - gamma) * s_old * torch.exp(b_prev - b_new) + gamma * g, g)
    s_new = s_new.clamp_min(_TINY)

    scale = 1.0 / (s_new * (num_anchors_local * (n - 1)))
    e.mul_(scale.unsqueeze(1))
    e.diagonal(offset).copy_(-(scale * row_sum))

    side = _Side()
    side.b, side.s, side.g, side.pos, side.coef = b_new, s_new, g, pos, e
    # per-anchor share of the surrogate, sum_j C_rj S_rj (iSogCLR needs it per anchor)
    side.value = torch.linalg.vecdot(e, sim, dim=1) if want_values else None
    return side


# ------------------------------------------------------------------------- base class


_GAMMA_SCHEDULES = ("const", "cosine")
_ETA_SCHEDULES = ("const", "cosine", "exp")


class _GlobalContrastiveLoss(ContrastiveLoss):
    """Shared machinery of the SogCLR family (not registered itself).

    Subclasses choose the temperatures of a step (``_step_temperatures``), may add
    per-sample state (``_extra_state``) and batch-level terms (``_regularisers``).
    """

    stateful = True
    _needs_anchor_values = False
    _extra_state_names: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        num_samples: int | None = None,
        tau: float = 0.01,
        gamma: float = 0.8,
        gamma_schedule: str = "const",
        gamma_decay_epochs: int | None = None,
        rho: float = 6.0,
        eta: float = 0.01,
        beta: float = 0.9,
        tau_min: float = 0.005,
        tau_max: float = 1.0,
    ) -> None:
        super().__init__()
        if num_samples is None or isinstance(num_samples, bool) or int(num_samples) != num_samples:
            raise ValueError(
                f"loss {self.registry_name!r} keeps per-sample state: pass num_samples "
                f"(the dataset size, an int >= 1), got {num_samples!r}"
            )
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0.0 < tau_min <= tau_max:
            raise ValueError(f"need 0 < tau_min <= tau_max, got [{tau_min}, {tau_max}]")
        if not tau_min <= tau <= tau_max:
            raise ValueError(f"tau={tau} must lie in [tau_min, tau_max] = [{tau_min}, {tau_max}]")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
        if gamma_schedule not in _GAMMA_SCHEDULES:
            raise ValueError(
                f"gamma_schedule must be one of {_GAMMA_SCHEDULES}, got {gamma_schedule!r}"
            )
        if gamma_schedule == "cosine" and not (gamma_decay_epochs and gamma_decay_epochs > 0):
            raise ValueError("gamma_schedule='cosine' needs gamma_decay_epochs > 0")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must lie in (0, 1], got {beta}")
        if eta < 0.0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.num_samples = int(num_samples)
        self.tau, self.gamma, self.rho, self.eta, self.beta = tau, gamma, rho, eta, beta
        self.tau_min, self.tau_max = tau_min, tau_max
        self.gamma_schedule, self.gamma_decay_epochs = gamma_schedule, gamma_decay_epochs

        zeros = torch.zeros(self.num_samples, dtype=torch.float32)
        for name in ("b_img", "s_img", "b_txt", "s_txt"):
            self.register_buffer(name, zeros.clone())
        self.register_buffer("visited", torch.zeros(self.num_samples, dtype=torch.bool))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self._last: dict[str, torch.Tensor] = {}

    # ---- schedules

    def current_gamma(self) -> float:
        """gamma in effect now (after ``on_epoch_end`` calls)."""
        return gamma_at(int(self.epoch), self.gamma, self.gamma_schedule, self.gamma_decay_epochs)

    def on_epoch_end(self, epoch: int) -> None:
        """Epoch ``epoch`` (0-based) is done: the schedules move to epoch + 1."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch.fill_(int(epoch) + 1)

    # ---- hooks

    def _step_temperatures(self, sim_img, sim_txt, index_local, x_all, t_all, world):
        """Temperatures [B_local] of this step's image and text anchors."""
        tau = torch.full((sim_img.shape[0],), self.tau, dtype=sim_img.dtype, device=sim_img.device)
        return tau, tau

    def _extra_state(self, img: _Side, txt: _Side, tau_img, tau_txt, index_local, local_batch):
        """Extra per-anchor state columns, in the order of ``_extra_state_names``."""
        return []

    def _regularisers(self, x_all, t_all, tau_img) -> torch.Tensor | None:
        """Batch-level terms added to every rank's share (computed on the global batch)."""
        return None

    # ---- the step

    def compute(self, image_all, text_all, index_all, rank, local_batch):
        n = image_all.shape[0]
        world = n // local_batch
        offset = rank * local_batch
        dtype = torch.promote_types(image_all.dtype, torch.float32)
        device = image_all.device
        state_device = self.visited.device
        index_local = index_all[offset : offset + local_batch].to(state_device)

        def read(name: str) -> torch.Tensor:
            return getattr(self, name)[index_local].to(device=device, dtype=dtype)

        with torch.autocast(device_type=device.type, enabled=False):
            x_all = image_all.to(dtype)
            t_all = text_all.to(dtype)
            x_loc = x_all[offset : offset + local_batch]
            t_loc = t_all[offset : offset + local_batch]
            with torch.no_grad():
                if world == 1:
                    sim_img = x_all.detach() @ t_all.detach().T
                    sim_txt = sim_img.T  # text anchors are the columns
                else:
                    sim_img = x_loc.detach() @ t_all.detach().T
                    sim_txt = t_loc.detach() @ x_all.detach().T
            tau_img, tau_txt = self._step_temperatures(
                sim_img, sim_txt, index_local, x_all, t_all, world
            )
            seen = self.visited[index_local].to(device)
            gamma = self.current_gamma()
            sides = []
            for sim, tau, b, s in (
                (sim_img, tau_img, "b_img", "s_img"),
                (sim_txt, tau_txt, "b_txt", "s_txt"),
            ):
                sides.append(
                    _moving_average_side(
                        sim,
                        offset,
                        1.0 / tau,
                        read(b),
                        read(s),
                        seen,
                        gamma,
                        local_batch,
                        self._needs_anchor_values,
                    )
                )
            img, txt = sides

            if world == 1:
                # one coefficient matrix for both modalities: C = C_img + C_txt^T
                coef = img.coef.add_(txt.coef.T)
                txt.coef = None
                with torch.no_grad():
                    value = torch.dot(coef.reshape(-1), sim_img.reshape(-1))
                loss = _LinearInSimilarity.apply(x_all, t_all, coef, value)
            else:
                with torch.no_grad():
                    value_img = torch.dot(img.coef.reshape(-1), sim_img.reshape(-1))
                    value_txt = torch.dot(txt.coef.reshape(-1), sim_txt.reshape(-1))
                loss = _LinearInSimilarity.apply(x_loc, t_all, img.coef, value_img)
                loss = loss + _LinearInSimilarity.apply(t_loc, x_all, txt.coef, value_txt)
            del sim_img, sim_txt

            extra = self._extra_state(img, txt, tau_img, tau_txt, index_local, local_batch)
            regulariser = self._regularisers(x_all, t_all, tau_img)
            if regulariser is not None:
                loss = loss + regulariser

        if self.training:
            columns = torch.stack([img.b, img.s, txt.b, txt.s, *extra], dim=1)
            index_write = index_local
            if world > 1:  # every rank writes the state of the whole global batch
                columns = all_gather_no_grad(columns)
                index_write = index_all.to(state_device)
            columns = columns.to(device=state_device, dtype=torch.float32)
            names = ("b_img", "s_img", "b_txt", "s_txt", *self._extra_state_names)
            for col, name in enumerate(names):
                getattr(self, name)[index_write] = columns[:, col]
            self.visited[index_write] = True
        return loss

    def diagnostics(self) -> dict[str, float]:
        out = {"gamma": self.current_gamma(), "tau": float(self.tau)}
        out.update({k: float(v) for k, v in self._last.items()})
        return out


# ---------------------------------------------------------------------------- losses


@register("sogclr")
class SogCLRLoss(_GlobalContrastiveLoss):
    """SogCLR: global contrastive loss optimised with a moving-average estimator.

    Yuan et al. 2022, "Provable Stochastic Optimization for Global Contrastive Learning:
    Small Batch Does Not Harm Performance", arXiv 2202.12387 (Alg. 1).

    Per anchor k and modality: F_k = tau * log mean_{j != k} exp(h_kj / tau), with the
    inner mean tracked across epochs by the moving average s_k (state per dataset index).
    The returned value is the surrogate L_I + L_T, L = mean_k sum_j w_kj h_kj / (N-1),
    w = exp(h / tau - b) / s (constant); its gradient is the SogCLR gradient estimator.
    State is updated inside ``forward`` (one call = one training step); in ``eval()``
    mode the loss is computed the same way but no state is written.

    Args:
        num_samples: dataset size (required); state is indexed by dataset index.
        tau: fixed temperature (default 0.01), within [tau_min, tau_max].
        gamma: moving-average weight of the new estimate (default 0.8; LibAUC uses 0.9).
        gamma_schedule: ``"const"`` or ``"cosine"`` (1 -> gamma over
            ``gamma_decay_epochs`` epochs, advanced by ``on_epoch_end``).
        rho, eta, beta: accepted for a uniform SogCLR-family interface; used by
            ``isogclr`` only.
        tau_min, tau_max: temperature bounds (default [0.005, 1.0]).
    """


@register("isogclr")
class ISogCLRLoss(_GlobalContrastiveLoss):
    """iSogCLR: individualised, learned temperatures via a KL-constrained DRO objective.

    Qiu et al. 2023, "Not All Semantics are Created Equal: Contrastive Self-supervised
    Learning with Automatic Temperature Individualization", arXiv 2305.11965 (Alg. 1).

    Per anchor k: tau_k * log mean_{j != k} exp(h_kj / tau_k) + rho * tau_k, each
    modality with its own tau_k. Model gradient: the SogCLR surrogate with z = h / tau_k.
    Temperature step, per visit: G_k = log s_k + b_k + rho - sum_j w_kj z_kj / (N-1)
    (d/dtau of the objective with the moving average in place of the mean),
    u_k <- (1 - beta) u_k + beta clip(G_k, -5, 5), tau_k <- clamp(tau_k - eta u_k,
    tau_min, tau_max).

    When the temperature moves: inside ``forward``, as in the original (the temperature
    is not a torch parameter, so there is no separate optimiser step). The returned loss
    and its gradient use the temperatures in effect at the start of the call; the new
    temperatures (and s, b, u) are written after the loss is formed and take effect at
    the anchor's next visit, so the value and its gradient are well defined. In
    ``eval()`` mode nothing is written.

    Args:
        num_samples: dataset size (required).
        tau_init: initial per-sample temperature (default 0.01); ``tau`` is an alias.
        gamma, gamma_schedule, gamma_decay_epochs: as for ``sogclr``.
        rho: DRO constraint weight (default 6.0; paper 6-8).
        eta: temperature step size (default 0.01); ``eta_schedule`` ``"const"``,
            ``"cosine"`` (to 0 over ``eta_decay_epochs``) or ``"exp"`` (times
            ``eta_decay_rate`` per epoch), advanced by ``on_epoch_end``.
        beta: momentum of the temperature gradient (default 0.9).
        tau_min, tau_max: temperature bounds (default [0.005, 1.0]; the course used
            [0.005, 0.05]).
    """

    _needs_anchor_values = True
    _extra_state_names = ("tau_img", "u_img", "tau_txt", "u_txt")

    def __init__(
        self,
        *,
        num_samples: int | None = None,
        tau: float | None = None,
        tau_init: float | None = None,
        gamma: float = 0.8,
        gamma_schedule: str = "const",
        gamma_decay_epochs: int | None = None,
        rho: float = 6.0,
        eta: float = 0.01,
        eta_schedule: str = "const",
        eta_decay_epochs: int | None = None,
        eta_decay_rate: float = 0.8,
        beta: float = 0.9,
        tau_min: float = 0.005,
        tau_max: float = 1.0,
    ) -> None:
        if tau is not None and tau_init is not None and tau != tau_init:
            raise ValueError(f"tau ({tau}) and tau_init ({tau_init}) are aliases; pass one")
        init = tau_init if tau_init is not None else (tau if tau is not None else 0.01)
        super().__init__(
            num_samples=num_samples,
            tau=init,
            gamma=gamma,
            gamma_schedule=gamma_schedule,
            gamma_decay_epochs=gamma_decay_epochs,
            rho=rho,
            eta=eta,
            beta=beta,
            tau_min=tau_min,
            tau_max=tau_max,
        )
        if eta_schedule not in _ETA_SCHEDULES:
            raise ValueError(f"eta_schedule must be one of {_ETA_SCHEDULES}, got {eta_schedule!r}")
        if eta_schedule == "cosine" and not (eta_decay_epochs and eta_decay_epochs > 0):
            raise ValueError("eta_schedule='cosine' needs eta_decay_epochs > 0")
        if not 0.0 < eta_decay_rate <= 1.0:
            raise ValueError(f"eta_decay_rate must lie in (0, 1], got {eta_decay_rate}")
        self.tau_init = init
        self.eta_schedule, self.eta_decay_epochs = eta_schedule, eta_decay_epochs
        self.eta_decay_rate = eta_decay_rate
        for name in ("tau_img", "tau_txt"):
            self.register_buffer(name, torch.full((self.num_samples,), init, dtype=torch.float32))
        for name in ("u_img", "u_txt"):
            self.register_buffer(name, torch.zeros(self.num_samples, dtype=torch.float32))

    def current_eta(self) -> float:
        """Temperature step size in effect now."""
        return eta_at(
            int(self.epoch), self.eta, self.eta_schedule, self.eta_decay_epochs, self.eta_decay_rate
        )

    def _step_temperatures(self, sim_img, sim_txt, index_local, x_all, t_all, world):
        dev, dtype = sim_img.device, sim_img.dtype
        return (
            self.tau_img[index_local].to(device=dev, dtype=dtype),
            self.tau_txt[index_local].to(device=dev, dtype=dtype),
        )

    def _extra_state(self, img, txt, tau_img, tau_txt, index_local, local_batch):
        """iSogCLR temperature step (Qiu et al. 2023, Alg. 1): G, momentum u, clamped tau."""
        eta = self.current_eta()
        columns = []
        for side, tau, u_name in ((img, tau_img, "u_img"), (txt, tau_txt, "u_txt")):
            # sum_j w_kj z_kj / (N-1) = (per-anchor surrogate share) * B_local / tau_k
            weighted_z = side.value * local_batch / tau
            grad_tau = torch.log(side.s) + side.b + self.rho - weighted_z
            u_old = getattr(self, u_name)[index_local].to(device=tau.device, dtype=tau.dtype)
            u_new = (1.0 - self.beta) * u_old + self.beta * grad_tau.clamp(-5.0, 5.0)
            tau_new = (tau - eta * u_new).clamp(self.tau_min, self.tau_max)
            columns += [tau_new, u_new]
        return columns

    def diagnostics(self) -> dict[str, float]:
        out = super().diagnostics()
        del out["tau"]  # per-sample temperatures: report their spread instead
        out["eta"] = self.current_eta()
        seen = self.visited
        for key, buf in (("tau_image", self.tau_img), ("tau_text", self.tau_txt)):
            values = buf[seen] if bool(seen.any()) else buf
            out[f"{key}_mean"] = float(values.mean())
            out[f"{key}_min"] = float(values.min())
            out[f"{key}_max"] = float(values.max())
        return out


@register("info_sogclr")
class InfoSogCLRLoss(_GlobalContrastiveLoss):
    """InfoSogCLR ("sogclr_mine"): SogCLR + covariance (and optional variance) regulariser.

    SogCLR (Yuan et al. 2022) plus VICReg's (Bardes et al. 2022) covariance term on the
    features of BOTH modalities (the original applied it twice to the image features),
    cov_weight * (c(X) + c(T)), c(Z) = sum_{k != l} Cov(Z)_kl^2 / dim, and optionally
    var_weight * (v(X) + v(T)), v(Z) = mean_d relu(1 - std(Z_d)). The features are the
    L2-normalised embeddings the loss receives; the terms use the global batch and every
    rank adds them in full (their mean over ranks is the single-process value).

    Args: as ``sogclr``, plus ``cov_weight`` (default 1.0) and ``var_weight``
    (default 0.0: off).
    """

    def __init__(self, *, cov_weight: float = 1.0, var_weight: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if cov_weight < 0 or var_weight < 0:
            raise ValueError(
                f"cov_weight and var_weight must be >= 0, got {cov_weight}, {var_weight}"
            )
        self.cov_weight, self.var_weight = cov_weight, var_weight

    def _regularisers(self, x_all, t_all, tau_img):
        cov = covariance_penalty(x_all) + covariance_penalty(t_all)
        total = self.cov_weight * cov
        self._last = {"covariance": cov.detach()}
        if self.var_weight > 0:
            var = variance_hinge(x_all) + variance_hinge(t_all)
            total = total + self.var_weight * var
            self._last["variance"] = var.detach()
        return total


@register("hybrid_sogclr")
class HybridSogCLRLoss(_GlobalContrastiveLoss):
    """HybridSogCLR: SogCLR with an adaptive global temperature, variance and difficulty terms.

    Course project extension of SogCLR (spec sogclr.md, section 3). Per step, one global
    temperature tau = clamp(tau0 * (1 + tanh(std(S))), tau_min, tau_max) (no gradient;
    std over all N x N entries of the global batch), then the SogCLR surrogate with that
    tau, plus var_weight * (v(X) + v(T)) (VICReg variance hinge, see ``info_sogclr``)
    plus difficulty_weight * (-mean_ij S_ij / tau * p_i q_j), p = softmax_i ||x_i - mean
    x||, q = softmax_j ||t_j - mean t||. State is indexed by the true dataset index (the
    original clamped indices to 8191) and errors propagate (the original returned 0).

    Args: as ``sogclr`` (``tau`` is tau0, default 0.01), plus ``var_weight`` (0.1) and
    ``difficulty_weight`` (0.1).
    """

    def __init__(
        self, *, var_weight: float = 0.1, difficulty_weight: float = 0.1, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.var_weight, self.difficulty_weight = var_weight, difficulty_weight

    def _step_temperatures(self, sim_img, sim_txt, index_local, x_all, t_all, world):
        """tau = tau0 * (1 + tanh(std(S))) over the global S (HybridSogCLR, spec sec. 3)."""
        n_rows, n = sim_img.shape
        var, mean = torch.var_mean(sim_img, correction=0)
        stats = torch.stack([var, mean]).to(torch.float64).unsqueeze(0)
        if world > 1:  # combine the row blocks of all ranks (equal sizes)
            stats = all_gather_no_grad(stats)
        block = n_rows * n
        grand_mean = stats[:, 1].mean()
        sum_sq = (stats[:, 0] * block + (stats[:, 1] - grand_mean) ** 2 * block).sum()
        std = torch.sqrt(sum_sq / (block * stats.shape[0] - 1))
        tau = (self.tau * (1.0 + torch.tanh(std))).clamp(self.tau_min, self.tau_max)
        return tau.to(sim_img.dtype).expand(n_rows), tau.to(sim_img.dtype).expand(n_rows)

    def _regularisers(self, x_all, t_all, tau_img):
        var = variance_hinge(x_all) + variance_hinge(t_all)
        difficulty = difficulty_term(x_all, t_all, tau_img[0])
        self._last = {
            "tau": tau_img[0].detach(),
            "variance": var.detach(),
            "difficulty": difficulty.detach(),
        }
        return self.var_weight * var + self.difficulty_weight * difficulty
