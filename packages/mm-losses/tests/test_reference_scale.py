"""``reference_scale=True`` reproduces the public reference code's loss scale exactly.

- SogCLR / iSogCLR: LibAUC's ``GCLoss_v2`` (``temperature_scheme="global_constant"`` and
  ``"individual_learnable"``) returns (N - 1) / 2 times our surrogate: it sums the
  weighted negatives where we average them, and averages the image and text sides where
  we add them. A plain re-statement of its formula is written below; when the ``libauc``
  package is installed (CI runs this file with ``uv run --with libauc``) the real class
  is compared too.
- CyCLIP: the authors' code multiplies both regularisers by the batch size.
- VICReg: the authors' code averages the two variance hinges (half of Eq. 6's sum).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from _loss_cases import assert_close

import mm_losses

N, D, NUM_SAMPLES = 6, 5, 20


def _features(seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(N, D, generator=g, dtype=dtype), dim=1)
    t = torch.nn.functional.normalize(x + 0.7 * torch.randn(N, D, generator=g, dtype=dtype), dim=1)
    return x.requires_grad_(), t.requires_grad_()


class LibAUCFormula:
    """GCLoss_v2's forward, restated plainly (one process, fresh or revisited batches).

    Per side, with h = S - S_kk (rows: image anchors; for text anchors S^T), z = h / tau_k:
    b_k <- max(b_k, max_j z_kj) (b starts at 0; the max includes z_kk = 0), e_kj =
    exp(z_kj - b_k) for j != k, u_k <- (1 - g) u_k exp(b_old - b_new) + g sum_j e_kj / (N-1)
    (g = 1 for a batch seen for the first time, else gamma), p = e / u, side loss =
    mean_k sum_j p_kj h_kj; loss = (image side + text side) / 2. Individual temperatures:
    G_k = log u_k + rho + b_k - sum_j p_kj z_kj / (N-1), m_k <- (1 - beta) m_k + beta G_k,
    tau_k <- clamp(tau_k - eta m_k, tau_min, tau_max).
    """

    def __init__(self, tau, gamma, individual=False, rho=6.0, eta=0.01, beta=0.9,
                 tau_min=0.005, tau_max=0.05):  # fmt: skip
        self.gamma, self.individual = gamma, individual
        self.rho, self.eta, self.beta, self.tau_min, self.tau_max = rho, eta, beta, tau_min, tau_max
        zeros = torch.zeros(2, NUM_SAMPLES, dtype=torch.float64)
        self.b, self.u, self.m = zeros.clone(), zeros.clone(), zeros.clone()
        self.tau = torch.full((2, NUM_SAMPLES), float(tau), dtype=torch.float64)

    def step(self, x, t, index):
        sim = x @ t.T
        off = ~torch.eye(N, dtype=torch.bool)
        total = 0.0
        for side, s in enumerate((sim, sim.T)):
            h = s - s.diagonal()[:, None]
            tau = self.tau[side, index][:, None]
            z = (h / tau).detach()
            b_old = self.b[side, index].clone()
            b_new = torch.maximum(b_old, z.max(dim=1).values)
            e = torch.exp(z - b_new[:, None]) * off
            g = 1.0 if bool((self.u[side, index] == 0).all()) else self.gamma
            u = (1 - g) * self.u[side, index] * torch.exp(b_old - b_new) + g * e.sum(1) / (N - 1)
            p = (e / u[:, None]).detach()
            total = total + (p * h).sum(dim=1).mean()
            if self.individual:
                grad = torch.log(u) + self.rho + b_new - (p * z).sum(1) / (N - 1)
                self.m[side, index] = (1 - self.beta) * self.m[side, index] + self.beta * grad
                self.tau[side, index] = (
                    self.tau[side, index] - self.eta * self.m[side, index]
                ).clamp(self.tau_min, self.tau_max)
            self.b[side, index], self.u[side, index] = b_new, u
        return total / 2


STEPS = [[3, 7, 1, 12, 0, 19], [3, 7, 1, 12, 0, 19], [2, 4, 5, 6, 8, 9]]
CONFIGS = {
    "sogclr": ({"tau": 0.1, "gamma": 0.9}, {}),
    "isogclr": (
        {"tau": 0.03, "gamma": 0.9, "rho": 6.0, "eta": 0.01, "beta": 0.9, "tau_max": 0.05},
        {"individual": True},  # + grad_clip=None: LibAUC does not clip the tau gradient
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sogclr_reference_scale_is_libaucs_loss(name):
    kwargs, extra = CONFIGS[name]
    # LibAUC takes normalised features and does not normalise them again
    clip = {"grad_clip": None} if extra.get("individual") else {}
    ours = mm_losses.build(
        name, num_samples=NUM_SAMPLES, reference_scale=True, normalize=False, **clip, **kwargs
    ).double()
    formula = LibAUCFormula(**kwargs, **extra)
    if extra.get("individual"):  # start from the same (float32-rounded) temperatures
        formula.tau.copy_(torch.stack([ours.tau_img, ours.tau_txt]))
    default = mm_losses.build(
        name, num_samples=NUM_SAMPLES, normalize=False, **clip, **kwargs
    ).double()
    for step, index in enumerate(STEPS):
        x, t = _features(step)
        idx = torch.tensor(index)
        got, want = ours(x, t, idx), formula.step(x, t, idx)
        assert_close(got, want, rtol=1e-10, atol=1e-12, what=f"step {step} value")
        grads = torch.autograd.grad(got, (x, t))
        for g, w in zip(grads, torch.autograd.grad(want, (x, t))):
            assert_close(g, w, rtol=1e-9, atol=1e-12, what=f"step {step} gradient")
        with torch.no_grad():
            plain_value = default(x.detach(), t.detach(), idx)
        assert_close(got.detach(), plain_value * (N - 1) / 2, rtol=1e-10, atol=1e-12)
    if extra.get("individual"):
        assert_close(ours.tau_img[:], formula.tau[0], rtol=1e-10, atol=1e-12, what="tau_img")
        assert_close(ours.tau_txt[:], formula.tau[1], rtol=1e-10, atol=1e-12, what="tau_txt")


@pytest.mark.skipif(importlib.util.find_spec("libauc") is None, reason="libauc not installed")
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sogclr_reference_scale_equals_libauc_gcloss_v2(name):
    """Against the real peer (installed only in the test run: uv run --with libauc)."""
    import contextlib
    import io

    from libauc.losses import GCLoss_v2

    kwargs, extra = CONFIGS[name]
    scheme = "individual_learnable" if extra.get("individual") else "global_constant"
    peer_kwargs = {k: v for k, v in kwargs.items() if k != "gamma"}
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its gamma schedule
        peer = GCLoss_v2(
            N=NUM_SAMPLES, gamma=kwargs["gamma"], temperature_scheme=scheme, **peer_kwargs
        )
    clip = {"grad_clip": None} if extra.get("individual") else {}
    ours = mm_losses.build(
        name, num_samples=NUM_SAMPLES, reference_scale=True, normalize=False, **clip, **kwargs
    )
    for step, index in enumerate(STEPS[:2]):  # the peer's gamma: 1 on a first visit in epoch 0
        x, t = (v.detach().float().requires_grad_() for v in _features(step))
        x2, t2 = (v.detach().clone().requires_grad_() for v in (x, t))
        idx = torch.tensor(index)
        got = ours(x, t, idx)
        want = peer(x2, t2, idx)[0]
        assert_close(got.detach(), want.detach(), rtol=1e-4, atol=1e-6, what=f"step {step}")
        for g, w in zip(torch.autograd.grad(got, (x, t)), torch.autograd.grad(want, (x2, t2))):
            assert_close(g, w, rtol=1e-3, atol=1e-6, what=f"step {step} gradient")
    if extra.get("individual"):
        assert_close(ours.tau_img, peer.learnable_tau_img[:, 0], rtol=1e-4, atol=1e-7)
        assert_close(ours.tau_txt, peer.learnable_tau_txt[:, 0], rtol=1e-4, atol=1e-7)


def test_cyclip_reference_scale_multiplies_the_regularisers_by_the_batch():
    x, t = _features(0)
    kwargs = {"in_modal_weight": 0.3, "cross_modal_weight": 0.2, "normalize": False}
    plain = mm_losses.build("cyclip", **kwargs).double()(x, t)
    clip = mm_losses.build("clip", normalize=False).double()(x, t)
    scaled = mm_losses.build("cyclip", reference_scale=True, **kwargs).double()(x, t)
    in_modal = ((x @ x.T - t @ t.T) ** 2).mean()
    cross_modal = ((x @ t.T - t @ x.T) ** 2).mean()
    assert_close(plain, clip + 0.3 * in_modal + 0.2 * cross_modal, rtol=1e-10, atol=1e-12)
    assert_close(scaled, clip + N * (0.3 * in_modal + 0.2 * cross_modal), rtol=1e-10, atol=1e-12)


def test_vicreg_reference_scale_averages_the_variance_hinges():
    x, t = _features(1)
    x, t = 0.3 * x, 0.3 * t  # small spread: the hinges are active

    def hinge(z):
        return torch.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()

    def cov(z):
        c = torch.cov(z.T)
        return (c**2).sum().sub((c.diagonal() ** 2).sum()) / z.shape[1]

    invariance = ((x - t) ** 2).mean()
    for reference_scale, weight in ((False, 25.0), (True, 12.5)):
        loss = mm_losses.build("vicreg", reference_scale=reference_scale).double()
        want = 25.0 * invariance + weight * (hinge(x) + hinge(t)) + cov(x) + cov(t)
        assert_close(loss(x, t), want, rtol=1e-10, atol=1e-12)
