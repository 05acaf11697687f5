"""onlineclr against a slow reference of its docstring definition, over several steps."""

from __future__ import annotations

import math

import pytest
import torch
from _loss_cases import assert_close

import mm_losses

B, D = 5, 4


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    t = 0.5 * x + torch.randn(B, D, generator=g, dtype=torch.float64)
    return x.requires_grad_(), t.requires_grad_()


def _normalise(v):
    return torch.stack([row / torch.sqrt((row * row).sum()) for row in v])


def _terms(x, t, tau):
    """(positive term mean_i S_ii / tau, negative term mean_{i != j} exp(S_ij / tau))."""
    x, t = _normalise(x), _normalise(t)
    n = x.shape[0]
    sim = [[sum(x[i, k] * t[j, k] for k in range(x.shape[1])) for j in range(n)] for i in range(n)]
    positive = sum(sim[i][i] for i in range(n)) / (n * tau)
    negative = sum(torch.exp(sim[i][j] / tau) for i in range(n) for j in range(n) if i != j)
    return positive, negative / (n * (n - 1))


@pytest.mark.parametrize(("tau", "gamma"), [(0.5, 0.9), (0.1, 0.3), (1.0, 1.0)])
def test_onlineclr_matches_reference_over_steps(tau, gamma):
    loss = mm_losses.build("onlineclr", tau=tau, gamma=gamma)
    u = None  # the reference's running normaliser, a plain float
    for step in range(3):
        x, t = _inputs(step)
        got = loss(x, t)
        positive, negative = _terms(x, t, tau)
        n_value = float(negative.detach())
        u = n_value if u is None else (1 - gamma) * u + gamma * n_value
        want = -positive + math.log(u) + negative / u - 1.0
        assert_close(got, want, rtol=1e-5, atol=1e-6)
        grads = torch.autograd.grad(got, (x, t))
        for g, w in zip(grads, torch.autograd.grad(want, (x, t))):
            assert_close(g, w, rtol=1e-5, atol=1e-6)  # float32 EMA state
        assert loss.diagnostics()["log_normaliser"] == pytest.approx(math.log(u), rel=1e-6)
        assert int(loss.num_updates) == step + 1


def test_onlineclr_first_step_is_the_global_contrastive_loss():
    x, t = _inputs(5)
    got = mm_losses.build("onlineclr", tau=0.2)(x, t)
    positive, negative = _terms(x, t, 0.2)
    assert_close(got, -positive + torch.log(negative), rtol=1e-6, atol=1e-6)


def test_onlineclr_state_is_in_the_state_dict():
    loss = mm_losses.build("onlineclr")
    assert {"log_normaliser", "positive_ema", "num_updates"} <= set(loss.state_dict())


def test_onlineclr_rejects_bad_gamma():
    with pytest.raises(ValueError, match="gamma"):
        mm_losses.build("onlineclr", gamma=0.0)


def test_onlineclr_eval_mode_leaves_the_moving_average_alone():
    loss = mm_losses.build("onlineclr", tau=0.2, gamma=0.5)
    x, t = _inputs(6)
    with torch.no_grad():
        first = loss.eval()(x, t)  # no state yet: the batch's own normaliser
        positive, negative = _terms(x, t, 0.2)
        assert_close(first, -positive + torch.log(negative), rtol=1e-5, atol=1e-6)
        assert int(loss.num_updates) == 0
        loss.train()(x, t)
        state = {k: v.clone() for k, v in loss.state_dict().items()}
        loss.eval()(*_inputs(7))
    assert all(torch.equal(v, loss.state_dict()[k]) for k, v in state.items())
