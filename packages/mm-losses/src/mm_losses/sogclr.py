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

import contextlib
import math

import torch

from mm_losses.base import ContrastiveLoss
from mm_losses.distributed import all_gather_no_grad
from mm_losses.registry import register
from mm_losses.vicreg import covariance_penalty, variance_hinge

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


def difficulty_term(x: torch.Tensor, t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """-mean_ij(S_ij / tau * p_i q_j), p = softmax_i ||x_i - mean x||, q likewise for t.

    HybridSogCLR's difficulty term, evaluated without the
    N x N matrix: sum_ij S_ij p_i q_j = <X^T p, T^T q>.
    """
    n = x.shape[0]
    p = torch.softmax(torch.linalg.vector_norm(x - x.mean(dim=0), dim=1), dim=0)
    q = torch.softmax(torch.linalg.vector_norm(t - t.mean(dim=0), dim=1), dim=0)
    return -torch.dot(x.T @ p, t.T @ q) / (n * n * tau)


# ----------------------------------------------------------------- surrogate autograd op


def _float32_region(device: torch.device):
    """Autocast off (the caller upcasts); a no-op context when autocast is not active."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _along(v: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-anchor vector v broadcast over a matrix whose anchors run along ``axis``."""
    return v.unsqueeze(1) if axis == 1 else v.unsqueeze(0)


class _LinearInSimilarity(torch.autograd.Function):
    """value = sum_r sum_kj C[r]_kj <P_r[k], Q_r[j]> for constant C; backward C Q and C^T P.

    Called as ``apply(value, coef, radial, P_0, Q_0, P_1, Q_1, ...)`` with ``coef``
    [R, ., .]. ``value`` is computed by the caller (it already has the similarities), so
    the forward only saves C and the operands; no N x N graph is kept.

    ``radial`` (None, or [2, N] with R = 1) folds L2 normalisation into the op: the
    operands are the raw features, ``coef`` is C / (|p_k| |q_j|) and the similarity
    <p_k, q_j> / (|p_k| |q_j|); the gradient of the normalisation is then the radial term
    -radial[0]_k p_k (and -radial[1]_j q_j), radial[0]_k = sum_j C_kj S_kj / |p_k|^2,
    so no normalised copy of the features and no second autograd node are needed.
    """

    @staticmethod
    def forward(ctx, value, coef, radial, *operands):
        ctx.save_for_backward(coef, radial, *operands)
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        coef, radial, *operands = ctx.saved_tensors
        grads = []
        # the usual upstream gradient is exactly 1: skip the scaling then (CPU only: on
        # an accelerator reading it would synchronise)
        unit = grad.device.type == "cpu" and float(grad) == 1.0
        with _float32_region(coef.device):
            for r in range(len(operands) // 2):
                p, q = operands[2 * r], operands[2 * r + 1]
                need_p, need_q = ctx.needs_input_grad[3 + 2 * r : 5 + 2 * r]
                grad_p = coef[r] @ q if need_p else None
                grad_q = coef[r].T @ p if need_q else None
                if radial is not None:
                    if grad_p is not None:
                        grad_p.addcmul_(p, radial[0].unsqueeze(1), value=-1.0)
                    if grad_q is not None:
                        grad_q.addcmul_(q, radial[1].unsqueeze(1), value=-1.0)
                grads.append(None if grad_p is None else _scaled(grad_p, grad, unit))
                grads.append(None if grad_q is None else _scaled(grad_q, grad, unit))
        return (None, None, None, *grads)


def _scaled(x: torch.Tensor, grad: torch.Tensor, unit: bool) -> torch.Tensor:
    return x if unit else x.mul_(grad)


_NORM_EPS = 1e-12  # F.normalize's floor of the norm


def _inverse_norms(x: torch.Tensor) -> torch.Tensor:
    """1 / max(||x_k||, eps) per row."""
    return torch.linalg.vector_norm(x, dim=1).clamp_min_(_NORM_EPS).reciprocal_()


# ------------------------------------------------------------------------- base class


_GAMMA_SCHEDULES = ("const", "cosine")
_ETA_SCHEDULES = ("const", "cosine", "exp")


def _column(col: int, doc: str) -> property:
    return property(lambda self: self.state[:, col], doc=doc)


class _GlobalContrastiveLoss(ContrastiveLoss):
    """Shared machinery of the SogCLR family (not registered itself).

    Per-sample state is one buffer ``state`` [num_samples, K] (float32, or the dtype the
    module is cast to; one gather and one scatter per step) with columns b_img, b_txt, s_img, s_txt (+ tau_img, tau_txt, u_img,
    u_txt for ``isogclr``), readable as the properties of those names, and a bool buffer
    ``visited`` (first-visit logic). b starts at -inf (a running max over nothing), s at 0. Subclasses choose the temperatures of a step (``_inverse_temperatures``),
    may add state columns (``_extra_state``) and batch-level terms (``_regularisers``).
    """

    stateful = True
    _needs_anchor_values = False
    _num_columns = 4

    b_img = _column(0, "running max b of h / tau per image anchor (dataset index)")
    b_txt = _column(1, "running max b of h / tau per text anchor")
    s_img = _column(2, "moving average s of mean_j exp(h_ij / tau - b_i), image anchors")
    s_txt = _column(3, "moving average s, text anchors")

    def __init__(
        self,
        *,
        num_samples: int | None = None,
        tau: float = 0.01,
        gamma: float = 0.8,
        gamma_schedule: str = "const",
        gamma_decay_epochs: int | None = None,
        tau_min: float = 0.005,
        tau_max: float = 1.0,
        normalize: bool = True,
        check_inputs: bool = True,
        reference_scale: bool = False,
    ) -> None:
        super().__init__(normalize=normalize, check_inputs=check_inputs)
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
        self.num_samples = int(num_samples)
        self.tau, self.gamma = tau, gamma
        self.reference_scale = bool(reference_scale)
        self.tau_min, self.tau_max = tau_min, tau_max
        self.gamma_schedule, self.gamma_decay_epochs = gamma_schedule, gamma_decay_epochs

        shape = (self.num_samples, self._num_columns)
        self.register_buffer("state", torch.zeros(shape, dtype=torch.float32))
        self.state[:, 0:2] = -math.inf  # running max over nothing yet
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

    def _normalizes_itself(self, world: int) -> bool:
        """One process and no feature regulariser: the normalisation is folded into S."""
        return world == 1 and type(self)._regularisers is _GlobalContrastiveLoss._regularisers

    def _inverse_temperatures(self, sim_rows, old, world):
        """1 / tau of this step: a float, a 0-dim tensor, or [2, B] (image, text anchors)."""
        return 1.0 / self.tau

    def _extra_state(self, old, new, values, inv_tau, local_batch):
        """Fill rows 4.. of ``new`` [K, B] (the new state, b and s done) from ``old``."""

    def _regularisers(self, x_all, t_all, inv_tau) -> torch.Tensor | None:
        """Batch-level terms added to every rank's share (computed on the global batch)."""
        return None

    # ---- the step

    def compute(self, image_all, text_all, index_all, rank, local_batch):
        """SogCLR step (Yuan et al. 2022, Alg. 1) for both modalities at once.

        For anchor k of either modality: z = h / tau, b <- max(b, max_{j != k} z_kj),
        e_kj = exp(z_kj - b_k), g_k = sum_j e_kj / (N-1), s_k = g_k on a first visit, else
        (1 - gamma) s_k exp(b_old - b_new) + gamma g_k. The surrogate coefficients are
        C_kj = e_kj / (s_k B_local (N-1)) with C_kk = -sum_j C_kj (the -S_kk part of h), so
        sum_kj C_kj S_kj = mean_k sum_j w_kj h_kj / (N-1) with w = e / s.

        Layout: one process computes S once; image anchors are its rows and text anchors
        its columns, and the two coefficient matrices are summed into one (backward: two
        matmuls). With several ranks, the anchors of both sides are rows:
        [x_loc T_all^T, t_loc X_all^T] (the positive of local row k is column offset + k).
        """
        n = image_all.shape[0]
        world = n // local_batch
        offset = rank * local_batch
        raw = self.normalize and self._normalizes_itself(world)  # features not normalised yet
        device = image_all.device
        dtype = torch.promote_types(image_all.dtype, torch.float32)
        index_local = index_all[offset : offset + local_batch]
        if index_local.device != self.state.device:
            index_local = index_local.to(self.state.device)
        old = self.state[index_local]  # [B, K] in the state's dtype
        seen = self.visited[index_local]
        if old.device != device or old.dtype != dtype:
            old, seen = old.to(device=device, dtype=dtype), seen.to(device)
        old = old.T  # [K, B]: row c holds column c of the state
        new = torch.empty_like(old)  # the new state, filled with out= below

        with _float32_region(device):
            x_all = image_all if image_all.dtype == dtype else image_all.to(dtype)
            t_all = text_all if text_all.dtype == dtype else text_all.to(dtype)
            x_loc = x_all[offset : offset + local_batch] if world > 1 else x_all
            t_loc = t_all[offset : offset + local_batch] if world > 1 else t_all
            with torch.no_grad():
                neg_max = torch.empty((2, local_batch), dtype=dtype, device=device)
                if world == 1:
                    sim = x_all.detach() @ t_all.detach().T
                    if raw:  # the features' normalisation, applied to S (see __init__)
                        inv_norms = [_inverse_norms(v.detach()) for v in (x_all, t_all)]
                        sim.mul_(inv_norms[0].unsqueeze(1)).mul_(inv_norms[1].unsqueeze(0))
                    sides = ((sim, 1), (sim, 0))  # (matrix, axis along which anchors run)
                    diag = sim.diagonal()
                    pos = diag.clone()
                    diag.fill_(-math.inf)  # max over the negatives only: tightest stabiliser
                    torch.amax(sim, dim=1, out=neg_max[0])
                    torch.amax(sim, dim=0, out=neg_max[1])
                else:
                    sim = torch.empty((2, local_batch, n), dtype=dtype, device=device)
                    torch.mm(x_loc.detach(), t_all.detach().T, out=sim[0])
                    torch.mm(t_loc.detach(), x_all.detach().T, out=sim[1])
                    sides = ((sim[0], 1), (sim[1], 1))
                    diag = sim.diagonal(offset, dim1=1, dim2=2)
                    pos = diag.clone()
                    diag.fill_(-math.inf)
                    torch.amax(sim, dim=2, out=neg_max)
                diag.copy_(pos)

                inv_tau = self._inverse_temperatures(sides[0][0], old, world)
                b_new, s_new = new[0:2], new[2:4]
                # b starts at -inf, so max(b_old, .) is also right on a first visit
                torch.maximum(old[0:2], neg_max.sub_(pos).mul_(inv_tau), out=b_new)
                # e = exp(S / tau - (S_kk / tau + b_k)): one fused pass per side, exp in place
                if isinstance(inv_tau, float):
                    bias = torch.add(b_new, pos, alpha=inv_tau).neg_()
                else:
                    bias = torch.addcmul(b_new, pos, inv_tau).neg_()
                coef = torch.empty((2, *sides[0][0].shape), dtype=dtype, device=device)
                for r, (sim_r, axis) in enumerate(sides):
                    if isinstance(inv_tau, float):
                        torch.add(_along(bias[r], axis), sim_r, alpha=inv_tau, out=coef[r])
                    else:
                        scale_r = _along(inv_tau[r], axis) if inv_tau.dim() == 2 else inv_tau
                        torch.addcmul(_along(bias[r], axis), sim_r, scale_r, out=coef[r])
                coef_diag = coef.diagonal(offset, dim1=1, dim2=2)
                coef_diag.fill_(-math.inf)
                coef.exp_()
                row_sum = torch.empty((2, local_batch), dtype=dtype, device=device)
                for r, (_, axis) in enumerate(sides):
                    torch.sum(coef[r], dim=axis, out=row_sum[r])
                # s = lerp(s_old exp(b_old - b_new), g, gamma), gamma = 1 on a first visit
                gamma = torch.where(seen, pos.new_full((), self.current_gamma()), 1.0)
                decayed = torch.sub(old[0:2], b_new).exp_().mul_(old[2:4])
                torch.lerp(decayed, row_sum / (n - 1), gamma, out=s_new)
                s_new.clamp_min_(_TINY)
                scale = torch.mul(s_new, local_batch * (n - 1)).reciprocal_()
                diag_value = scale.mul(row_sum).neg_()  # C_kk = -sum_j C_kj

                values = None  # per-anchor shares sum_j C_kj S_kj [2, B] (iSogCLR needs them)
                if self._needs_anchor_values:
                    values = torch.stack(
                        [
                            torch.linalg.vecdot(coef[r], sim_r, dim=axis) * scale[r]
                            for r, (sim_r, axis) in enumerate(sides)
                        ]
                    ).add_(diag_value * pos)
                if world == 1:  # C = C_img + C_txt in S layout
                    combined = coef[0].mul_(_along(scale[0], 1))
                    combined.addcmul_(coef[1], _along(scale[1], 0))
                    combined.diagonal().copy_(diag_value.sum(dim=0))
                    coef = combined.unsqueeze(0)
                    operands = (x_all, t_all)
                else:
                    coef.mul_(scale.unsqueeze(-1))
                    coef_diag.copy_(diag_value)
                    operands = (x_loc, t_all, t_loc, x_all)
                radial = None
                if raw:  # the gradient of the normalisation: the radial terms
                    weighted = coef[0] * sim
                    row, col = weighted.sum(dim=1), weighted.sum(dim=0)
                    value = row.sum()
                    radial = torch.stack([row * inv_norms[0].square(), col * inv_norms[1].square()])
                    radial.mul_(torch.stack(inv_norms) < 1.0 / _NORM_EPS)  # floored: none
                    coef[0].mul_(inv_norms[0].unsqueeze(1)).mul_(inv_norms[1].unsqueeze(0))
                elif values is not None:
                    value = values.sum()
                else:
                    value = torch.dot(coef.view(-1), sim.view(-1))
                del sim, sides
            loss = _LinearInSimilarity.apply(value, coef, radial, *operands)

            self._extra_state(old, new, values, inv_tau, local_batch)
            regulariser = self._regularisers(x_all, t_all, inv_tau)
            if regulariser is not None:
                loss = loss + regulariser

        if self.training:
            index_write, rows = index_local, new.T  # [B, K]
            if world > 1:  # every rank writes the state of the whole global batch
                rows = all_gather_no_grad(rows.contiguous())
                index_write = index_all.to(self.state.device)
            self.state[index_write] = rows.to(device=self.state.device, dtype=self.state.dtype)
            self.visited[index_write] = True
        if self.reference_scale:  # LibAUC's GCLoss_v2: (L_I + L_T) (N - 1) / 2
            loss = loss * ((n - 1) / 2)
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
        tau_min, tau_max: temperature bounds (default [0.005, 1.0]).
        normalize: L2-normalise the features first (default True).
        check_inputs: validate the inputs (default True).
        reference_scale: multiply the loss by (N - 1) / 2 (N the global batch), the scale
            of LibAUC's ``GCLoss_v2`` (it sums over the negatives where we average, and
            averages the two sides where we add them); default False.
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
    u_k <- (1 - beta) u_k + beta clip(G_k, -grad_clip, grad_clip), tau_k <- clamp(tau_k - eta u_k,
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
        grad_clip: bound of |G_k| (default 5.0, the authors' training code; None: no
            clipping, as LibAUC's ``GCLoss_v2``).
        tau_min, tau_max: temperature bounds (default [0.005, 1.0]; LibAUC's
            ``GCLoss_v2`` and the course used [0.005, 0.05]).
        normalize, check_inputs, reference_scale: as for ``sogclr``.
    """

    _needs_anchor_values = True
    _num_columns = 8

    tau_img = _column(4, "temperature per image anchor (dataset index)")
    tau_txt = _column(5, "temperature per text anchor")
    u_img = _column(6, "moving average u of the temperature gradient, image anchors")
    u_txt = _column(7, "moving average u of the temperature gradient, text anchors")

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
        grad_clip: float | None = 5.0,
        tau_min: float = 0.005,
        tau_max: float = 1.0,
        normalize: bool = True,
        check_inputs: bool = True,
        reference_scale: bool = False,
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
            tau_min=tau_min,
            tau_max=tau_max,
            normalize=normalize,
            check_inputs=check_inputs,
            reference_scale=reference_scale,
        )
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must lie in (0, 1], got {beta}")
        if eta < 0.0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip}")
        self.rho, self.eta, self.beta, self.grad_clip = rho, eta, beta, grad_clip
        if eta_schedule not in _ETA_SCHEDULES:
            raise ValueError(f"eta_schedule must be one of {_ETA_SCHEDULES}, got {eta_schedule!r}")
        if eta_schedule == "cosine" and not (eta_decay_epochs and eta_decay_epochs > 0):
            raise ValueError("eta_schedule='cosine' needs eta_decay_epochs > 0")
        if not 0.0 < eta_decay_rate <= 1.0:
            raise ValueError(f"eta_decay_rate must lie in (0, 1], got {eta_decay_rate}")
        self.tau_init = init
        self.eta_schedule, self.eta_decay_epochs = eta_schedule, eta_decay_epochs
        self.eta_decay_rate = eta_decay_rate
        self.state[:, 4:6] = init

    def current_eta(self) -> float:
        """Temperature step size in effect now."""
        return eta_at(
            int(self.epoch), self.eta, self.eta_schedule, self.eta_decay_epochs, self.eta_decay_rate
        )

    def _inverse_temperatures(self, sim_rows, old, world):
        return torch.reciprocal(old[4:6])

    def _extra_state(self, old, new, values, inv_tau, local_batch):
        """iSogCLR temperature step (Qiu et al. 2023, Alg. 1): G, momentum u, clamped tau."""
        # sum_j w_kj z_kj / (N-1) = (per-anchor surrogate share) * B_local / tau_k
        weighted_z = values * (local_batch * inv_tau)
        grad_tau = torch.log(new[2:4]) + new[0:2] + self.rho - weighted_z
        if self.grad_clip is not None:
            grad_tau.clamp_(-self.grad_clip, self.grad_clip)
        u_new = torch.lerp(old[6:8], grad_tau, self.beta, out=new[6:8])
        torch.clamp(old[4:6] - self.current_eta() * u_new, self.tau_min, self.tau_max, out=new[4:6])

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

    def _regularisers(self, x_all, t_all, inv_tau):
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

    Course project extension of SogCLR. Per step, one global
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

    def _inverse_temperatures(self, sim_rows, old, world):
        """tau = tau0 * (1 + tanh(std(S))) over the global S (HybridSogCLR)."""
        n_rows, n = sim_rows.shape
        var, mean = torch.var_mean(sim_rows, correction=0)
        stats = torch.stack([var, mean]).to(torch.float64).unsqueeze(0)
        if world > 1:  # combine the row blocks of all ranks (equal sizes)
            stats = all_gather_no_grad(stats)
        block = n_rows * n
        grand_mean = stats[:, 1].mean()
        sum_sq = (stats[:, 0] * block + (stats[:, 1] - grand_mean) ** 2 * block).sum()
        std = torch.sqrt(sum_sq / (block * stats.shape[0] - 1))
        tau = (self.tau * (1.0 + torch.tanh(std))).clamp(self.tau_min, self.tau_max)
        self._step_tau = tau.to(sim_rows.dtype)
        return torch.reciprocal(self._step_tau)

    def _regularisers(self, x_all, t_all, inv_tau):
        var = variance_hinge(x_all) + variance_hinge(t_all)
        difficulty = difficulty_term(x_all, t_all, self._step_tau)
        self._last = {
            "tau": self._step_tau,
            "variance": var.detach(),
            "difficulty": difficulty.detach(),
        }
        return self.var_weight * var + self.difficulty_weight * difficulty
