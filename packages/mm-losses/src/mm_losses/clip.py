"""CLIP-style losses: symmetric InfoNCE (``clip``), sigmoid pairwise (``siglip``), ``cyclip``.

Notation: x_i, t_j image and text features (L2-normalised unless ``normalize=False``),
S_ij = <x_i, t_j>. In a process group every rank scores its own rows (anchors) against
the gathered columns of the global batch; its return value is the mean over its anchors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mm_losses.base import ContrastiveLoss, working_dtype
from mm_losses.distributed import all_gather_no_grad, is_distributed
from mm_losses.registry import register

TEMPERATURE_MODES = ("fixed", "learnable", "per_sample")


class Temperature(nn.Module):
    """Temperature of a softmax loss: fixed, one learnable scalar, or one per dataset sample.

    A learnable temperature is stored as ``logit_scale = log(1 / tau)`` (open_clip's
    parametrisation, so ``exp(logit_scale)`` multiplies the similarities) and projected
    onto ``[log(1/tau_max), log(1/tau_min)]`` at every call, the way open_clip clamps its
    logit scale to at most 100 after each step (``tau_min=0.01`` reproduces that). The
    projection happens before the value is used, so a parameter pushed past a bound by an
    optimiser step comes back and keeps receiving gradient.

    Per-sample temperatures are buffers, not parameters, updated by the loss itself only
    where visited, as iSogCLR updates its temperatures (Qiu et al. 2023, Alg. 1): when
    the loss is backpropagated, anchor i's per-anchor gradient g_i = d loss_i / d
    logit_scale_i moves a momentum u_i <- (1 - beta) u_i + beta g_i and the temperature
    logit_scale_i <- clamp(logit_scale_i - eta u_i). Unvisited samples do not move (an
    optimiser's momentum would move them), and nothing of size num_samples is all-reduced:
    under DDP the ranks exchange the visited rows only, so every rank writes the same.
    """

    def __init__(
        self,
        mode: str = "fixed",
        tau: float = 0.07,
        tau_min: float | None = None,
        tau_max: float | None = None,
        num_samples: int | None = None,
        eta: float | None = None,
        beta: float | None = None,
    ) -> None:
        super().__init__()
        if mode not in TEMPERATURE_MODES:
            raise ValueError(f"temperature must be one of {TEMPERATURE_MODES}, got {mode!r}")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        unused = {"tau_min": tau_min, "tau_max": tau_max} if mode == "fixed" else {}
        if mode != "per_sample":
            unused |= {"num_samples": num_samples, "eta": eta, "beta": beta}
        given = sorted(k for k, v in unused.items() if v is not None)
        if given:
            raise ValueError(f"{', '.join(given)} unused with temperature={mode!r}")
        tau_min = 0.01 if tau_min is None else tau_min
        tau_max = 1.0 if tau_max is None else tau_max
        if mode != "fixed" and not 0 < tau_min <= tau <= tau_max:
            raise ValueError(f"need 0 < tau_min <= tau <= tau_max, got {tau_min}, {tau}, {tau_max}")
        self.mode, self.tau = mode, float(tau)
        self.bounds = (math.log(1.0 / tau_max), math.log(1.0 / tau_min))
        init = math.log(1.0 / tau)
        if mode == "learnable":
            self.logit_scale = nn.Parameter(torch.tensor(init))
        elif mode == "per_sample":
            if num_samples is None or num_samples < 1:
                raise ValueError("temperature='per_sample' needs num_samples (the dataset size)")
            self.eta = 0.01 if eta is None else float(eta)
            self.beta = 0.9 if beta is None else float(beta)
            if self.eta < 0 or not 0 < self.beta <= 1:
                raise ValueError(f"need eta >= 0 and 0 < beta <= 1, got {self.eta}, {self.beta}")
            self.register_buffer("logit_scale", torch.full((num_samples,), init))
            self.register_buffer("momentum", torch.zeros(num_samples))

    def scale(self, index: torch.Tensor | None = None, batch: int = 1) -> torch.Tensor | float:
        """1 / tau: a float (fixed), a 0-d tensor (learnable) or a [B] tensor (per sample).

        Per sample, ``index`` holds this rank's anchors and ``batch`` their number: the
        rank's value is the mean over them, so batch x its gradient is each anchor's own.
        """
        if self.mode == "fixed":
            return 1.0 / self.tau
        lo, hi = self.bounds
        if self.mode == "learnable":
            self.logit_scale.data.clamp_(lo, hi)
            return self.logit_scale.exp()
        log_scale = self.logit_scale[index].clamp(lo, hi)
        if self.training and torch.is_grad_enabled():
            log_scale.requires_grad_(True)
            log_scale.register_hook(lambda grad: self._step(index, grad * batch))
        return log_scale.exp()

    @torch.no_grad()
    def _step(self, index: torch.Tensor, grad: torch.Tensor) -> None:
        """Move the temperatures of ``index`` (per-anchor gradient ``grad``); all ranks."""
        index, grad = index.to(self.logit_scale.device), grad.to(self.logit_scale.dtype)
        if is_distributed():
            index, grad = all_gather_no_grad(index), all_gather_no_grad(grad)
        lo, hi = self.bounds
        u = torch.lerp(self.momentum[index], grad, self.beta)
        self.momentum[index] = u
        self.logit_scale[index] = (self.logit_scale[index] - self.eta * u).clamp(lo, hi)

    def diagnostics(self) -> dict[str, float]:
        if self.mode == "fixed":
            return {"tau": self.tau}
        tau = (-self.logit_scale.detach().clamp(*self.bounds)).exp()
        if self.mode == "learnable":
            return {"tau": float(tau)}
        return {
            "tau_mean": float(tau.mean()),
            "tau_min": float(tau.min()),
            "tau_max": float(tau.max()),
        }


def symmetric_info_nce(
    image: torch.Tensor,
    text: torch.Tensor,
    rows: slice,
    scale: torch.Tensor | float,
    bias: torch.Tensor | float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLIP (Radford et al. 2021, Fig. 3): 0.5 [CE(S/tau, diag) + CE(S^T/tau, diag)] on ``rows``.

    ``image`` and ``text`` are the gathered [N, d] features, ``rows`` selects this rank's
    anchors (pair i is image anchor i and text anchor i), ``scale`` is 1/tau: a scalar or
    one value per anchor pair [b]. Returns (mean loss over the anchors, S_image, S_text)
    with S_image = <x_rows, t> and S_text = <t_rows, x>, both [b, N] (reused by CyCLIP).
    """
    dtype = working_dtype(image)
    b, n = rows.stop - rows.start, image.shape[0]
    per_anchor = isinstance(scale, torch.Tensor) and scale.dim() == 1
    if b == n:
        # One process: one matmul serves both directions (text anchors are columns).
        sim = (image @ text.T).to(dtype)
        if per_anchor:
            logits_image = sim * scale[:, None] + bias
            logits_text = sim * scale[None, :] + bias
        else:
            logits_image = logits_text = sim * scale + bias
        lse = logits_image.logsumexp(1).mean() + logits_text.logsumexp(0).mean()
        positives = logits_image.diagonal().mean() + logits_text.diagonal().mean()
        return 0.5 * (lse - positives), sim, sim.T
    targets = torch.arange(rows.start, rows.stop, device=image.device)[:, None]
    column = scale[:, None] if per_anchor else scale
    sim_image = (image[rows] @ text.T).to(dtype)
    sim_text = (text[rows] @ image.T).to(dtype)
    logits_image = sim_image * column + bias
    logits_text = sim_text * column + bias
    lse = logits_image.logsumexp(1).mean() + logits_text.logsumexp(1).mean()
    positives = logits_image.gather(1, targets).mean() + logits_text.gather(1, targets).mean()
    return 0.5 * (lse - positives), sim_image, sim_text


_CHUNK_ELEMENTS = 1 << 22  # logits per element-wise op in the fused path (16 MiB of fp32)


def _chunk_rows(n: int) -> int:
    return max(1, _CHUNK_ELEMENTS // n)


class _FusedSymmetricInfoNCE(torch.autograd.Function):
    """Single-process CLIP loss with a scalar scale, holding one B x B matrix at a time.

    Same value and gradients as :func:`symmetric_info_nce` with ``rows`` = all: forward
    keeps only the logits L = scale * X T^T and the row/column log-sum-exps; backward
    turns L in place into (softmax_row(L) + softmax_col(L) - 2 I), the gradient w.r.t. L
    up to a factor 1/(2B), and multiplies it back onto the features. Element-wise work
    runs over cache-sized row chunks through two small reused buffers, so there is no
    second B x B temporary (autograd would hold the logits, two softmaxes and their
    gradients, and page-fault on every fresh B x B allocation). Because backward
    overwrites the saved logits it can run once (a second backward after
    ``retain_graph=True`` raises).
    """

    @staticmethod
    def forward(ctx, image, text, scale):
        logits = (image * scale) @ text.T
        n = logits.shape[0]
        rows = _chunk_rows(n)
        work = logits.new_empty(min(rows, n), n)
        lse_row = logits.new_empty(n)
        col_max = logits.amax(dim=0)
        col_sum = torch.zeros_like(col_max)
        for start in range(0, n, rows):
            block = logits[start : start + rows]
            buf = work[: block.shape[0]]
            row_max = block.amax(dim=1)
            torch.sub(block, row_max[:, None], out=buf).exp_()
            lse_row[start : start + rows] = buf.sum(dim=1).log_().add_(row_max)
            torch.sub(block, col_max[None, :], out=buf).exp_()
            col_sum += buf.sum(dim=0)
        lse_col = col_sum.log_().add_(col_max)
        loss = 0.5 * (lse_row.mean() + lse_col.mean()) - logits.diagonal().mean()
        ctx.save_for_backward(image, text)
        ctx.logits, ctx.lse_row, ctx.lse_col = logits, lse_row, lse_col
        ctx.scale = float(scale)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.logits is None:
            raise RuntimeError("the fused clip loss can be backpropagated only once")
        image, text = ctx.saved_tensors
        logits, lse_row, lse_col, scale = ctx.logits, ctx.lse_row, ctx.lse_col, ctx.scale
        ctx.logits = None
        n = logits.shape[0]
        want_scale = ctx.needs_input_grad[2]
        diagonal_sum = logits.diagonal().sum() if want_scale else None
        weighted = logits.new_zeros(())  # sum_ij (P_row + P_col)_ij L_ij, for d/d scale
        rows = _chunk_rows(n)
        work = logits.new_empty(min(rows, n), n)
        for start in range(0, n, rows):
            block = logits[start : start + rows]
            buf = work[: block.shape[0]]
            torch.sub(block, lse_row[start : start + rows, None], out=buf).exp_()  # P_row
            if want_scale:
                weighted += torch.dot(buf.view(-1), block.reshape(-1))
                col = (block - lse_col[None, :]).exp_()  # P_col
                weighted += torch.dot(col.view(-1), block.reshape(-1))
                torch.add(buf, col, out=block)
            else:
                block.sub_(lse_col[None, :]).exp_().add_(buf)  # P_row + P_col
        logits.diagonal().sub_(2.0)  # dloss/dL = (P_row + P_col - 2 I) / (2n)
        coefficient = grad_loss * (0.5 / n)
        grad_image = grad_text = grad_scale = None
        if ctx.needs_input_grad[0]:  # L = scale X T^T
            grad_image = (logits @ text).mul_(coefficient * scale)
        if ctx.needs_input_grad[1]:
            grad_text = (logits.T @ image).mul_(coefficient * scale)
        if want_scale:
            grad_scale = coefficient * (weighted - 2.0 * diagonal_sum) / scale
        return grad_image, grad_text, grad_scale


@register("clip")
class CLIPLoss(ContrastiveLoss):
    """Symmetric InfoNCE of CLIP (Radford et al., ICML 2021, https://arxiv.org/abs/2103.00020).

    loss = 0.5 [CE(S / tau, diag) + CE(S^T / tau, diag)], S_ij = <x_i, t_j>.

    Args:
        tau: temperature (initial value when learnable).
        temperature: "fixed", "learnable" (one global tau, log-parametrised as open_clip's
            ``logit_scale``, clamped to [tau_min, tau_max]) or "per_sample" (one tau per
            dataset sample, used for that sample's image and text anchor rows and updated
            by the loss where visited, see ``Temperature``; needs ``num_samples`` and
            ``index``).
        tau_min, tau_max: bounds of a learnable tau (defaults 0.01 and 1.0; tau_min=0.01
            is open_clip's logit scale cap of 100).
        num_samples: dataset size, for ``temperature="per_sample"``.
        eta, beta: step size (0.01) and momentum weight (0.9) of per-sample temperatures.
        logit_bias: if not None, a learnable bias added to every logit, initialised to
            this value (as open_clip's ``logit_bias``). The softmax is shift invariant,
            so for this loss it changes neither value nor gradients; it exists for
            checkpoints that carry one.
        normalize: L2-normalise the features first (default True).
        check_inputs: validate the inputs (default True; see ``ContrastiveLoss``).
    """

    def __init__(
        self,
        tau: float = 0.07,
        temperature: str = "fixed",
        tau_min: float | None = None,
        tau_max: float | None = None,
        num_samples: int | None = None,
        eta: float | None = None,
        beta: float | None = None,
        logit_bias: float | None = None,
        normalize: bool = True,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(normalize=normalize, check_inputs=check_inputs)
        self.temperature = Temperature(
            temperature, tau, tau_min, tau_max, num_samples, eta=eta, beta=beta
        )
        self.stateful = temperature == "per_sample"
        self.num_samples = int(num_samples or 0) if self.stateful else 0
        self.logit_bias = None
        if logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias)))

    def compute(self, image_all, text_all, index_all, rank, local_batch):
        world = image_all.shape[0] // local_batch
        if self._can_fuse(image_all, world):
            scale = self.temperature.scale()
            return _FusedSymmetricInfoNCE.apply(image_all, text_all, scale)
        return self._clip_terms(image_all, text_all, index_all, rank, local_batch)[0]

    def _can_fuse(self, image_all: torch.Tensor, world: int) -> bool:
        """The fused path: one process, one scalar tau, no bias, fp32/fp64, no autocast."""
        return (
            world == 1
            and self.temperature.mode != "per_sample"
            and self.logit_bias is None
            and image_all.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled(image_all.device.type)
        )

    def _clip_terms(self, x, t, index_all, rank, local_batch):
        rows = slice(rank * local_batch, (rank + 1) * local_batch)
        if self.temperature.mode == "per_sample":
            scale = self.temperature.scale(index_all[rows], batch=local_batch)
        else:
            scale = self.temperature.scale()
        bias = 0.0 if self.logit_bias is None else self.logit_bias
        return (*symmetric_info_nce(x, t, rows, scale, bias), x, t)

    def diagnostics(self) -> dict[str, float]:
        out = self.temperature.diagnostics()
        if self.logit_bias is not None:
            out["logit_bias"] = float(self.logit_bias.detach())
        return out


@register("siglip")
class SigLIPLoss(ContrastiveLoss):
    """Sigmoid loss of SigLIP (Zhai et al., ICCV 2023, https://arxiv.org/abs/2303.15343, Alg. 1).

    loss = -1/B sum_ij log sigmoid(z_ij (t S_ij + b)), z_ij = +1 if i == j else -1, with a
    learnable log temperature log t (init log(1/tau) = log 10) and bias b (init -10).
    Each rank sums its rows against all gathered columns and divides by its row count.

    Args:
        tau: initial 1/t (0.1, i.e. t = 10).
        logit_bias: initial b (-10).
        learnable: learn t and b (default True); otherwise both stay fixed.
        normalize: L2-normalise the features first (default True).
        check_inputs: validate the inputs (default True).
    """

    def __init__(
        self,
        tau: float = 0.1,
        logit_bias: float = -10.0,
        learnable: bool = True,
        normalize: bool = True,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(normalize=normalize, check_inputs=check_inputs)
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        log_scale = torch.tensor(math.log(1.0 / tau))
        bias = torch.tensor(float(logit_bias))
        if learnable:
            self.logit_scale = nn.Parameter(log_scale)
            self.logit_bias = nn.Parameter(bias)
        else:
            self.register_buffer("logit_scale", log_scale)
            self.register_buffer("logit_bias", bias)

    def compute(self, x, t, index_all, rank, local_batch):
        start = rank * local_batch
        sim = (x[start : start + local_batch] @ t.T).to(working_dtype(x))
        logits = sim * self.logit_scale.exp() + self.logit_bias
        # -log sigmoid(-l) = softplus(l) off the diagonal, -log sigmoid(l) = softplus(l) - l on it.
        positives = logits.diagonal(offset=start)
        return (F.softplus(logits).sum() - positives.sum()) / local_batch

    def diagnostics(self) -> dict[str, float]:
        return {
            "tau": float((-self.logit_scale.detach()).exp()),
            "logit_bias": float(self.logit_bias.detach()),
        }


@register("cyclip")
class CyCLIPLoss(CLIPLoss):
    """CyCLIP (Goel et al., NeurIPS 2022, https://arxiv.org/abs/2205.14459, Eq. 4-6).

    loss = CLIP + in_modal_weight * mean_ij (<x_i, x_j> - <t_i, t_j>)^2
                + cross_modal_weight * mean_ij (<x_i, t_j> - <x_j, t_i>)^2
    on the (normalised) features, i.e. ||XX^T - TT^T||^2 and ||XT^T - TX^T||^2 averaged
    over the B^2 entries. The authors' code multiplies both regularisers by the batch
    size B: ``reference_scale=True`` does that.

    Args: ``in_modal_weight`` (0.25), ``cross_modal_weight`` (0.25),
    ``reference_scale`` (False), and every argument of ``clip``.
    """

    def __init__(
        self,
        tau: float = 0.07,
        temperature: str = "fixed",
        tau_min: float | None = None,
        tau_max: float | None = None,
        num_samples: int | None = None,
        eta: float | None = None,
        beta: float | None = None,
        logit_bias: float | None = None,
        normalize: bool = True,
        check_inputs: bool = True,
        in_modal_weight: float = 0.25,
        cross_modal_weight: float = 0.25,
        reference_scale: bool = False,
    ) -> None:
        super().__init__(
            tau, temperature, tau_min, tau_max, num_samples, eta, beta, logit_bias,
            normalize, check_inputs,
        )  # fmt: skip
        self.in_modal_weight = float(in_modal_weight)
        self.cross_modal_weight = float(cross_modal_weight)
        self.reference_scale = bool(reference_scale)

    def compute(self, image_all, text_all, index_all, rank, local_batch):
        terms = self._clip_terms(image_all, text_all, index_all, rank, local_batch)
        loss, sim_image, sim_text, x, t = terms
        rows = slice(rank * local_batch, (rank + 1) * local_batch)
        dtype = working_dtype(x)
        in_modal = (x[rows] @ x.T).to(dtype) - (t[rows] @ t.T).to(dtype)
        cross_modal = sim_image - sim_text  # <x_i, t_j> - <t_i, x_j>
        factor = x.shape[0] if self.reference_scale else 1.0
        return loss + factor * (
            self.in_modal_weight * in_modal.square().mean()
            + self.cross_modal_weight * cross_modal.square().mean()
        )
