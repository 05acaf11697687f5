"""Tests of the SogCLR family (sogclr, isogclr, info_sogclr, hybrid_sogclr).

Each loss is compared with a slow reference written below from the papers' formulas
(see the loss docstrings), with Python loops over anchors and candidates: values, gradients
(autograd through the loops) and per-sample state after several steps with revisits.
"""

from __future__ import annotations

import copy
import math
import multiprocessing as mp
import os
import statistics
import struct

import pytest
import torch
import torch.distributed as dist

import mm_losses
from mm_losses.sogclr import eta_at, gamma_at

NAMES = ["sogclr", "isogclr", "info_sogclr", "hybrid_sogclr"]
STATE = {
    "sogclr": ("b_img", "s_img", "b_txt", "s_txt", "visited"),
    "isogclr": (
        "b_img",
        "s_img",
        "b_txt",
        "s_txt",
        "visited",
        "tau_img",
        "u_img",
        "tau_txt",
        "u_txt",
    ),
    "info_sogclr": ("b_img", "s_img", "b_txt", "s_txt", "visited"),
    "hybrid_sogclr": ("b_img", "s_img", "b_txt", "s_txt", "visited"),
}


def f32(v: float) -> float:
    """Round a Python float to float32 (the state buffers' precision)."""
    return struct.unpack("f", struct.pack("f", v))[0]


# ------------------------------------------------------------------ slow reference


class Reference:
    """The formulas with explicit loops; state in Python lists (rounded to float32)."""

    def __init__(self, name, num_samples, tau=0.01, gamma=0.8, rho=6.0, eta=0.01, beta=0.9,
                 tau_min=0.005, tau_max=1.0, cov_weight=1.0, var_weight=None,
                 difficulty_weight=0.1):  # fmt: skip
        self.name, self.n = name, num_samples
        self.tau, self.gamma, self.rho, self.eta, self.beta = tau, gamma, rho, eta, beta
        self.tau_min, self.tau_max = tau_min, tau_max
        self.cov_weight, self.difficulty_weight = cov_weight, difficulty_weight
        if var_weight is None:
            var_weight = 0.1 if name == "hybrid_sogclr" else 0.0
        self.var_weight = var_weight
        self.state = {
            mod: {
                "b": [-math.inf] * num_samples,  # running max over nothing
                "s": [0.0] * num_samples,
                "tau": [f32(tau)] * num_samples,
                "u": [0.0] * num_samples,
            }
            for mod in ("img", "txt")
        }
        self.visited = [False] * num_samples
        self.last_tau = None

    def step(self, x, t, index):
        batch = x.shape[0]
        sim = [[torch.dot(x[i], t[j]) for j in range(batch)] for i in range(batch)]

        def h(mod, a, j):  # image anchor a: S_aj - S_aa; text anchor a: S_ja - S_aa
            return sim[a][j] - sim[a][a] if mod == "img" else sim[j][a] - sim[a][a]

        if self.name == "hybrid_sogclr":
            values = [sim[i][j].item() for i in range(batch) for j in range(batch)]
            std = statistics.stdev(values)
            global_tau = min(max(self.tau * (1 + math.tanh(std)), self.tau_min), self.tau_max)
            self.last_tau = global_tau
        loss = 0.0
        updates = []
        for mod in ("img", "txt"):
            st = self.state[mod]
            for a in range(batch):
                k = int(index[a])
                if self.name == "isogclr":
                    tau = st["tau"][k]
                elif self.name == "hybrid_sogclr":
                    tau = global_tau
                else:
                    tau = self.tau
                negatives = [j for j in range(batch) if j != a]
                z = {j: h(mod, a, j).item() / tau for j in negatives}
                zmax = max(z.values())
                seen = self.visited[k]
                b_old, s_old = st["b"][k], st["s"][k]
                b_new = max(b_old, zmax) if seen else zmax
                e = {j: math.exp(z[j] - b_new) for j in negatives}
                g = sum(e.values()) / (batch - 1)
                if seen:
                    s_new = (1 - self.gamma) * s_old * math.exp(b_old - b_new) + self.gamma * g
                else:
                    s_new = g
                w = {j: e[j] / s_new for j in negatives}
                loss = loss + sum(w[j] * h(mod, a, j) for j in negatives) / (batch - 1) / batch
                new = {"b": b_new, "s": s_new}
                if self.name == "isogclr":
                    grad_tau = (
                        math.log(s_new)
                        + b_new
                        + self.rho
                        - sum(w[j] * z[j] for j in negatives) / (batch - 1)
                    )
                    u = (1 - self.beta) * st["u"][k] + self.beta * min(max(grad_tau, -5.0), 5.0)
                    new["u"] = u
                    new["tau"] = min(max(tau - self.eta * u, self.tau_min), self.tau_max)
                updates.append((st, k, new))
        for st, k, new in updates:
            for key, value in new.items():
                st[key][k] = f32(value)
        for a in range(batch):
            self.visited[int(index[a])] = True

        if self.name == "info_sogclr":
            loss = loss + self.cov_weight * (self._cov(x) + self._cov(t))
            if self.var_weight > 0:
                loss = loss + self.var_weight * (self._var(x) + self._var(t))
        if self.name == "hybrid_sogclr":
            loss = loss + self.var_weight * (self._var(x) + self._var(t))
            loss = loss + self.difficulty_weight * self._difficulty(x, t, sim, global_tau)
        return loss

    @staticmethod
    def _cov(z):
        n, dim = z.shape
        mean = [sum(z[i, c] for i in range(n)) / n for c in range(dim)]
        total = 0.0
        for k in range(dim):
            for m in range(dim):
                if k != m:
                    cov = sum((z[i, k] - mean[k]) * (z[i, m] - mean[m]) for i in range(n)) / (n - 1)
                    total = total + cov**2
        return total / dim

    @staticmethod
    def _var(z):
        n, dim = z.shape
        total = 0.0
        for c in range(dim):
            mean = sum(z[i, c] for i in range(n)) / n
            var = sum((z[i, c] - mean) ** 2 for i in range(n)) / (n - 1)
            total = total + torch.relu(1 - torch.sqrt(var + 1e-4))
        return total / dim

    @staticmethod
    def _difficulty(x, t, sim, tau):
        n = x.shape[0]

        def weights(z):
            mean = z.mean(dim=0)
            norms = [torch.linalg.vector_norm(z[i] - mean) for i in range(n)]
            denom = sum(torch.exp(v) for v in norms)
            return [torch.exp(v) / denom for v in norms]

        p, q = weights(x), weights(t)
        total = sum(sim[i][j] / tau * p[i] * q[j] for i in range(n) for j in range(n))
        return -total / (n * n)

    def buffers(self):
        out = {}
        for mod in ("img", "txt"):
            for key in ("b", "s", "tau", "u"):
                out[f"{key}_{mod}"] = torch.tensor(self.state[mod][key], dtype=torch.float32)
        out["visited"] = torch.tensor(self.visited)
        return out


# ------------------------------------------------------------------------- helpers


def assert_close(actual, expected, rtol, atol):
    """torch.allclose with a readable message (torch.testing's first call is slow)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    actual, expected = actual.detach(), expected.detach()
    err = (actual.double() - expected.double()).abs()
    bound = atol + rtol * expected.double().abs()
    assert bool(((err <= bound) | (actual == expected)).all()), (
        f"max abs err {float(err.max()):.3g}\n{actual}\n{expected}"
    )


def features(batch, dim, seed, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen, dtype=dtype), dim=1)
    t = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen, dtype=dtype), dim=1)
    return x * scale, t * scale


INDICES = [[0, 3, 5, 7, 9, 11], [3, 4, 5, 6, 0, 1], [11, 0, 2, 4, 9, 8], [1, 3, 5, 7, 9, 11]]
KWARGS = {
    "sogclr": {"tau": 0.05, "gamma": 0.6},
    "isogclr": {"tau": 0.05, "gamma": 0.6, "eta": 0.02, "rho": 1.0, "tau_max": 0.5},
    "info_sogclr": {"tau": 0.05, "gamma": 0.6, "var_weight": 0.3},
    "hybrid_sogclr": {"tau": 0.05, "gamma": 0.6},
}


def assert_state(loss_module, ref, name):
    expected = ref.buffers()
    for key in STATE[name]:
        assert_close(getattr(loss_module, key), expected[key], rtol=2e-7, atol=0)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", NAMES)
def test_matches_loop_reference(name):
    """Values, gradients and state after several steps (with revisits) equal the loops."""
    kwargs = KWARGS[name]
    loss_fn = mm_losses.build(name, num_samples=12, normalize=False, **kwargs)
    ref = Reference(name, 12, **kwargs)
    for step, index in enumerate(INDICES):
        x, t = features(6, 5, seed=step)
        x1, t1 = x.clone().requires_grad_(), t.clone().requires_grad_()
        x2, t2 = x.clone().requires_grad_(), t.clone().requires_grad_()
        value = loss_fn(x1, t1, torch.tensor(index))
        expected = ref.step(x2, t2, index)
        value.backward()
        expected.backward()
        assert_close(value, expected.detach(), rtol=1e-9, atol=1e-12)
        assert_close(x1.grad, x2.grad, rtol=1e-8, atol=1e-10)
        assert_close(t1.grad, t2.grad, rtol=1e-8, atol=1e-10)
        assert_state(loss_fn, ref, name)
    if name == "hybrid_sogclr":
        assert loss_fn.diagnostics()["tau"] == pytest.approx(ref.last_tau, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_reference(name):
    """float32 inputs: same numbers as the float64 loops up to float32 rounding."""
    kwargs = KWARGS[name]
    loss_fn = mm_losses.build(name, num_samples=12, normalize=False, **kwargs)
    ref = Reference(name, 12, **kwargs)
    for step, index in enumerate(INDICES):
        x, t = features(6, 5, seed=step, dtype=torch.float32)
        x1, t1 = x.clone().requires_grad_(), t.clone().requires_grad_()
        x2, t2 = x.double().requires_grad_(), t.double().requires_grad_()
        value = loss_fn(x1, t1, torch.tensor(index))
        expected = ref.step(x2, t2, index)
        value.backward()
        expected.backward()
        assert value.dtype == torch.float32
        assert_close(value.double(), expected.detach(), rtol=1e-4, atol=1e-5)
        assert_close(x1.grad.double(), x2.grad, rtol=1e-3, atol=1e-4)


def _surrogate(x, t, s_img, s_txt, b_img, b_txt, tau_img, tau_txt):
    """tau_k * mean_j exp(h_kj / tau_k - b_k) / s_k averaged over anchors, both sides.

    Its gradient is that of tau_k * log mean_j exp(h_kj / tau_k) with the mean replaced by
    the moving average s_k (SogCLR's estimator): d(tau log g) = tau dg / g, g -> s.
    """
    batch = x.shape[0]
    sim = x @ t.T
    total = 0.0
    for a in range(batch):
        for mod in ("img", "txt"):
            tau = tau_img[a] if mod == "img" else tau_txt[a]
            b = b_img[a] if mod == "img" else b_txt[a]
            s = s_img[a] if mod == "img" else s_txt[a]
            g = 0.0
            for j in range(batch):
                if j != a:
                    h = sim[a, j] - sim[a, a] if mod == "img" else sim[j, a] - sim[a, a]
                    g = g + torch.exp(h / tau - b) / (batch - 1)
            total = total + tau * g / s
    return total / batch


@pytest.mark.parametrize("name", ["sogclr", "isogclr"])
def test_gradient_is_moving_average_surrogate(name):
    """grad = grad of tau log(mean exp(h / tau)) with the moving average for the mean."""
    extra = {"eta": 0.05, "rho": 1.0} if name == "isogclr" else {}
    loss_fn = mm_losses.build(name, num_samples=12, tau=0.2, gamma=0.5, normalize=False, **extra)
    for step, index in enumerate(INDICES):
        idx = torch.tensor(index)
        tau_img = loss_fn.tau_img[idx].double() if name == "isogclr" else [0.2] * 6
        tau_txt = loss_fn.tau_txt[idx].double() if name == "isogclr" else [0.2] * 6
        x, t = features(6, 5, seed=10 + step)
        x1, t1 = x.clone().requires_grad_(), t.clone().requires_grad_()
        loss_fn(x1, t1, idx).backward()
        state = [getattr(loss_fn, k)[idx].double() for k in ("s_img", "s_txt", "b_img", "b_txt")]
        x2, t2 = x.clone().requires_grad_(), t.clone().requires_grad_()
        _surrogate(x2, t2, *state, tau_img, tau_txt).backward()
        assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-8)
        assert_close(t1.grad, t2.grad, rtol=1e-5, atol=1e-8)


def test_gamma_one_is_batch_global_contrastive_loss():
    """With gamma = 1 the gradient is that of tau * mean_i log mean_{j != i} exp(h_ij / tau)."""
    tau = 0.1
    loss_fn = mm_losses.build("sogclr", num_samples=12, tau=tau, gamma=1.0, normalize=False)
    for step, index in enumerate(INDICES):
        x, t = features(6, 5, seed=20 + step)
        x1, t1 = x.clone().requires_grad_(), t.clone().requires_grad_()
        loss_fn(x1, t1, torch.tensor(index)).backward()
        x2, t2 = x.clone().requires_grad_(), t.clone().requires_grad_()
        sim = x2 @ t2.T
        off_diag = ~torch.eye(6, dtype=torch.bool)
        h_img = (sim - sim.diagonal()[:, None]) / tau
        h_txt = (sim.T - sim.diagonal()[:, None]) / tau
        gcl = 0.0
        for h in (h_img, h_txt):
            gcl = (
                gcl
                + tau
                * torch.stack(
                    [torch.log(torch.exp(h[i][off_diag[i]]).mean()) for i in range(6)]
                ).mean()
            )
        gcl.backward()
        assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-12)
        assert_close(t1.grad, t2.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rho", [-20.0, 0.0, 20.0])
def test_temperatures_stay_in_bounds(rho):
    """Large steps push the per-sample temperatures against the bounds, never past them."""
    loss_fn = mm_losses.build(
        "isogclr", num_samples=32, eta=5.0, rho=rho, tau_min=0.01, tau_max=0.3, tau=0.05
    )
    gen = torch.Generator().manual_seed(0)
    for step in range(40):
        x, t = features(8, 4, seed=100 + step, dtype=torch.float32)
        index = torch.randperm(32, generator=gen)[:8]
        assert torch.isfinite(loss_fn(x, t, index))
        for buf in (loss_fn.tau_img, loss_fn.tau_txt):
            assert bool(((buf >= 0.01) & (buf <= 0.3)).all())
    touched = torch.cat([loss_fn.tau_img[loss_fn.visited], loss_fn.tau_txt[loss_fn.visited]])
    if rho == 20.0:  # G >= rho - log(B-1) > 0 mostly: temperatures pushed to the floor
        assert float(touched.min()) == pytest.approx(0.01)
    if rho == -20.0:  # G <= rho + ... < 0 mostly: pushed to the ceiling
        assert float(touched.max()) == pytest.approx(0.3)


def test_hybrid_temperature_is_clamped():
    loss_fn = mm_losses.build("hybrid_sogclr", num_samples=8, tau=0.01, tau_max=0.012)
    x, t = features(8, 4, seed=1, dtype=torch.float32, scale=3.0)  # std(S) large
    loss_fn(x, t, torch.arange(8))
    assert loss_fn.diagnostics()["tau"] == pytest.approx(0.012)


def test_large_logits_are_finite():
    """Small tau and unnormalised features: z ~ +-1000 must not overflow or give NaN."""
    for name in NAMES:
        loss_fn = mm_losses.build(name, num_samples=64, tau=0.005)
        for step in range(3):
            x, t = features(16, 8, seed=step, dtype=torch.float32, scale=3.0)
            x.requires_grad_()
            value = loss_fn(x, t, torch.arange(16) + 16 * (step % 2))
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(x.grad).all(), name
            assert torch.isfinite(loss_fn.s_img).all() and (loss_fn.s_img >= 0).all()


def _train(loss_fn, model, opt, steps, start):
    losses = []
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(step)
        inputs = torch.randn(8, 6, generator=gen)
        index = torch.randperm(20, generator=gen)[:8]
        out = model(inputs)
        x = torch.nn.functional.normalize(out[:, :4], dim=1)
        t = torch.nn.functional.normalize(out[:, 4:], dim=1)
        value = loss_fn(x, t, index)
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.detach())
        if step % 2 == 1:
            loss_fn.on_epoch_end(step // 2)
    return torch.stack(losses)


@pytest.mark.parametrize("name", NAMES)
def test_resume_is_bit_for_bit(name):
    """N steps, checkpoint (loss state + optimizer), M more == fresh modules resumed."""
    torch.manual_seed(0)
    kwargs = {"gamma_schedule": "cosine", "gamma_decay_epochs": 3}
    if name == "isogclr":
        kwargs.update(eta_schedule="exp", eta=0.05)
    model = torch.nn.Linear(6, 8)
    loss_fn = mm_losses.build(name, num_samples=20, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(loss_fn, model, opt, steps=3, start=0)
    checkpoint = copy.deepcopy(
        {"model": model.state_dict(), "opt": opt.state_dict(), "loss": loss_fn.state_dict()}
    )
    continued = _train(loss_fn, model, opt, steps=4, start=3)

    model2 = torch.nn.Linear(6, 8)
    loss2 = mm_losses.build(name, num_samples=20, **kwargs)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    model2.load_state_dict(checkpoint["model"])
    opt2.load_state_dict(checkpoint["opt"])
    loss2.load_state_dict(checkpoint["loss"])
    resumed = _train(loss2, model2, opt2, steps=4, start=3)

    assert torch.equal(continued, resumed)
    for key, value in loss_fn.state_dict().items():
        assert torch.equal(value, loss2.state_dict()[key]), key
    assert loss_fn.diagnostics() == loss2.diagnostics()


def test_schedules():
    assert gamma_at(0, 0.8, "const", None) == 0.8
    assert gamma_at(0, 0.8, "cosine", 4) == pytest.approx(1.0)
    assert gamma_at(2, 0.8, "cosine", 4) == pytest.approx(0.9)
    assert gamma_at(4, 0.8, "cosine", 4) == pytest.approx(0.8)
    assert gamma_at(9, 0.8, "cosine", 4) == pytest.approx(0.8)
    assert eta_at(5, 0.03, "const", None, 0.8) == 0.03
    assert eta_at(0, 0.03, "cosine", 10, 0.8) == pytest.approx(0.03)
    assert eta_at(5, 0.03, "cosine", 10, 0.8) == pytest.approx(0.015)
    assert eta_at(12, 0.03, "cosine", 10, 0.8) == pytest.approx(0.0)
    assert eta_at(2, 0.03, "exp", None, 0.5) == pytest.approx(0.0075)

    loss_fn = mm_losses.build(
        "isogclr", num_samples=4, gamma=0.5, gamma_schedule="cosine", gamma_decay_epochs=2,
        eta=0.02, eta_schedule="cosine", eta_decay_epochs=4,
    )  # fmt: skip
    assert loss_fn.diagnostics()["gamma"] == pytest.approx(1.0)
    loss_fn.on_epoch_end(0)
    assert loss_fn.diagnostics()["gamma"] == pytest.approx(0.75)
    assert loss_fn.diagnostics()["eta"] == pytest.approx(0.02 * 0.5 * (1 + math.cos(math.pi / 4)))
    loss_fn.on_epoch_end(1)
    assert loss_fn.current_gamma() == pytest.approx(0.5)
    assert int(loss_fn.state_dict()["epoch"]) == 2


def test_moving_average_uses_scheduled_gamma():
    """A second visit mixes with the gamma of the current epoch (checked on the loops)."""
    loss_fn = mm_losses.build(
        "sogclr", num_samples=6, tau=0.1, gamma=0.2, gamma_schedule="cosine", gamma_decay_epochs=2
    )
    index = torch.arange(6)
    x, t = features(6, 5, seed=0)
    loss_fn(x, t, index)
    loss_fn.on_epoch_end(0)  # gamma now 0.6
    ref = Reference("sogclr", 6, tau=0.1, gamma=1.0)
    ref.step(x, t, index.tolist())
    ref.gamma = 0.6
    x, t = features(6, 5, seed=1)
    loss_fn(x, t, index)
    ref.step(x, t, index.tolist())
    assert_state(loss_fn, ref, "sogclr")


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_and_keeps_state(name):
    loss_fn = mm_losses.build(name, num_samples=10)
    x, t = features(4, 3, seed=0, dtype=torch.float32)
    loss_fn(x, t, torch.tensor([0, 1, 2, 3]))
    before = copy.deepcopy(loss_fn.state_dict())
    bad_x = x.clone()
    bad_x[1, 2] = float("nan")
    cases = [
        ((x, t, None), "index"),
        ((x, t, torch.tensor([0, 1, 2, 10])), "num_samples"),
        ((x, t, torch.tensor([-1, 1, 2, 3])), "num_samples"),
        ((x, t, torch.tensor([0, 1, 1, 3])), "duplicated"),
        ((x, t, torch.tensor([0, 1, 2, 3], dtype=torch.int16)), "int64"),
        ((bad_x, t, torch.tensor([4, 5, 6, 7])), "NaN"),
        ((x, t[:3], torch.tensor([4, 5, 6, 7])), "shape"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            loss_fn(*args)
        for key, value in loss_fn.state_dict().items():
            assert torch.equal(value, before[key]), (message, key)


@pytest.mark.parametrize("name", NAMES)
def test_constructor_validation(name):
    with pytest.raises(ValueError, match="num_samples"):
        mm_losses.build(name)
    with pytest.raises(ValueError, match="num_samples"):
        mm_losses.build(name, num_samples=0)
    with pytest.raises(ValueError, match="gamma"):
        mm_losses.build(name, num_samples=4, gamma=1.5)
    with pytest.raises(ValueError, match="gamma_decay_epochs"):
        mm_losses.build(name, num_samples=4, gamma_schedule="cosine")
    with pytest.raises(ValueError, match="tau"):
        mm_losses.build(name, num_samples=4, tau=2.0)
    with pytest.raises(ValueError):
        mm_losses.build(name, num_samples=4, no_such_option=1)
    if name == "isogclr":
        with pytest.raises(ValueError, match="eta_schedule"):
            mm_losses.build(name, num_samples=4, eta_schedule="linear")
        with pytest.raises(ValueError, match="alias"):
            mm_losses.build(name, num_samples=4, tau=0.02, tau_init=0.03)
        assert float(mm_losses.build(name, num_samples=4, tau_init=0.03).tau_img[0]) == (
            pytest.approx(0.03)
        )


@pytest.mark.parametrize("name", NAMES)
def test_autocast_bf16_upcasts(name):
    """Under bf16 autocast the loss math runs in float32: same as on upcast features."""
    torch.manual_seed(0)
    encoder = torch.nn.Linear(8, 16)
    inputs = torch.randn(12, 8)
    index = torch.arange(12)
    loss_a = mm_losses.build(name, num_samples=12)
    loss_b = mm_losses.build(name, num_samples=12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(inputs)
        assert out.dtype == torch.bfloat16
        x, t = torch.nn.functional.normalize(out, dim=1).chunk(2, dim=1)
        value = loss_a(x, t, index)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())
    reference = loss_b(x.detach().float(), t.detach().float(), index)
    assert_close(value.detach(), reference, rtol=1e-6, atol=1e-6)
    for key in STATE[name]:
        assert getattr(loss_a, key).dtype == getattr(loss_b, key).dtype
        assert torch.equal(getattr(loss_a, key), getattr(loss_b, key)), key


def test_eval_mode_does_not_write_state():
    loss_fn = mm_losses.build("isogclr", num_samples=8)
    x, t = features(4, 3, seed=0, dtype=torch.float32)
    loss_fn(x, t, torch.arange(4))
    before = copy.deepcopy(loss_fn.state_dict())
    loss_fn.eval()
    value = loss_fn(x, t, torch.arange(4) + 2)
    assert torch.isfinite(value)
    for key, buf in loss_fn.state_dict().items():
        assert torch.equal(buf, before[key]), key
    loss_fn.train()
    assert torch.equal(loss_fn(x, t, torch.arange(4) + 2), value)


# ---------------------------------------------------------------- distributed (gloo)

DIST_STEPS = [[0, 5, 2, 7, 9, 1, 3, 8], [5, 0, 4, 6, 8, 2, 1, 9], [1, 2, 3, 4, 5, 6, 7, 0]]
DIST_KWARGS = {**KWARGS, "isogclr": {**KWARGS["isogclr"], "eta": 0.2}}


def _dist_run(name, rank, world):
    loss_fn = mm_losses.build(name, num_samples=10, **DIST_KWARGS[name])
    out = []
    for step, index in enumerate(DIST_STEPS):
        x, t = features(len(index), 5, seed=step)
        lo, hi = rank * len(index) // world, (rank + 1) * len(index) // world
        x, t = x[lo:hi].clone().requires_grad_(), t[lo:hi].clone().requires_grad_()
        value = loss_fn(x, t, torch.tensor(index[lo:hi]))
        value.backward()
        out.append((value.detach(), x.grad, t.grad))
    return out, {k: v.clone() for k, v in loss_fn.state_dict().items()}


def _dist_worker(rank, world, init_file, result_dir):
    torch.set_num_threads(1)  # forked child: keep OpenMP out of it
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {name: _dist_run(name, rank, world) for name in NAMES}
        torch.save(results, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_process_gloo_matches_single_process(tmp_path):
    """Per-rank shares average to the one-process loss; grads and state agree on all ranks."""
    world = 2
    ctx = mp.get_context("fork")  # no re-import of torch in the children
    args = (world, str(tmp_path / "init"), str(tmp_path))
    procs = [ctx.Process(target=_dist_worker, args=(r, *args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * world
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for name in NAMES:
        single, single_state = _dist_run(name, 0, 1)
        for step in range(len(DIST_STEPS)):
            value, grad_x, grad_t = single[step]
            shares = torch.stack([ranks[r][name][0][step][0] for r in range(world)])
            assert_close(shares.mean(), value, rtol=1e-9, atol=1e-12)
            # each rank's local grads: sum over ranks' shares = world * one-process grad
            dist_x = torch.cat([ranks[r][name][0][step][1] for r in range(world)])
            dist_t = torch.cat([ranks[r][name][0][step][2] for r in range(world)])
            assert_close(dist_x, world * grad_x, rtol=1e-8, atol=1e-10)
            assert_close(dist_t, world * grad_t, rtol=1e-8, atol=1e-10)
        for key, value in single_state.items():
            assert torch.equal(ranks[0][name][1][key], ranks[1][name][1][key]), (name, key)
            assert_close(ranks[0][name][1][key], value, rtol=2e-7, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_normalisation_equals_normalising_first(name):
    """normalize=True on raw features (folded into S for sogclr/isogclr) has the value,
    gradients and state of normalize=False on F.normalize(features), over revisits."""
    kwargs = KWARGS[name]
    folded = mm_losses.build(name, num_samples=12, **kwargs).double()
    plain = mm_losses.build(name, num_samples=12, normalize=False, **kwargs).double()
    for step, index in enumerate(INDICES):
        x, t = features(6, 5, seed=30 + step)
        g = torch.Generator().manual_seed(step)
        x = x * (0.5 + 3 * torch.rand(6, 1, generator=g, dtype=torch.float64))  # norms vary
        t = t * (0.5 + 3 * torch.rand(6, 1, generator=g, dtype=torch.float64))
        x1, t1 = x.clone().requires_grad_(), t.clone().requires_grad_()
        x2, t2 = x.clone().requires_grad_(), t.clone().requires_grad_()
        idx = torch.tensor(index)
        a = folded(x1, t1, idx)
        b = plain(
            torch.nn.functional.normalize(x2, dim=1), torch.nn.functional.normalize(t2, dim=1), idx
        )
        a.backward()
        b.backward()
        assert_close(a, b.detach(), rtol=1e-10, atol=1e-12)
        assert_close(x1.grad, x2.grad, rtol=1e-8, atol=1e-11)
        assert_close(t1.grad, t2.grad, rtol=1e-8, atol=1e-11)
        for key, value in plain.state_dict().items():
            got = folded.state_dict()[key]
            assert (
                torch.equal(torch.isfinite(got), torch.isfinite(value))
                if got.is_floating_point()
                else True
            )
            if got.is_floating_point():
                finite = torch.isfinite(value)
                assert_close(got[finite], value[finite], rtol=1e-9, atol=1e-12)
