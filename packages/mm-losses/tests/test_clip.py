"""clip, siglip and cyclip against slow references written from the formulas (loops)."""

from __future__ import annotations

import math

import pytest
import torch
from _loss_cases import assert_close

import mm_losses
from mm_losses import clip as clip_module

B, D = 6, 5


def _inputs(seed: int = 0, batch: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, D, generator=g, dtype=torch.float64)
    t = 0.5 * x + torch.randn(batch, D, generator=g, dtype=torch.float64)
    return x.requires_grad_(), t.requires_grad_()


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return torch.stack([row / torch.sqrt((row * row).sum()) for row in v])


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return sum(a[k] * b[k] for k in range(a.shape[0]))


def clip_reference(x, t, scales, bias=0.0, normalize=True):
    """0.5 [CE(S/tau, diag) + CE(S^T/tau, diag)]; scales[i] = 1/tau of pair i."""
    if normalize:
        x, t = _normalise(x), _normalise(t)
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        image_logits = [_dot(x[i], t[j]) * scales[i] + bias for j in range(n)]
        text_logits = [_dot(t[i], x[j]) * scales[i] + bias for j in range(n)]
        for logits in (image_logits, text_logits):
            total = total - (logits[i] - torch.log(sum(torch.exp(v) for v in logits)))
    return 0.5 * total / n


def _compare(got, want, inputs):
    assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(want, inputs)):
        assert_close(g, w)


@pytest.mark.parametrize("normalize", [True, False])
def test_clip_fixed_temperature_matches_reference(normalize):
    x, t = _inputs()
    loss = mm_losses.build("clip", tau=0.3, normalize=normalize)
    want = clip_reference(x, t, [1 / 0.3] * B, normalize=normalize)
    _compare(loss(x, t), want, (x, t))


def test_clip_learnable_temperature_and_bias_match_reference():
    x, t = _inputs(1)
    loss = mm_losses.build("clip", tau=0.2, temperature="learnable", logit_bias=-2.0).double()
    got = loss(x, t)
    scale = loss.temperature.logit_scale.exp()
    want = clip_reference(x, t, [scale] * B, bias=loss.logit_bias)
    params = (x, t, loss.temperature.logit_scale)
    assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        assert_close(g, w)
    assert loss.diagnostics()["tau"] == pytest.approx(0.2)


def test_clip_logit_bias_is_a_softmax_no_op():
    x, t = _inputs(2)
    plain = mm_losses.build("clip", tau=0.5)(x, t)
    biased = mm_losses.build("clip", tau=0.5, logit_bias=-7.0).double()(x, t)
    assert_close(plain, biased)


def test_clip_per_sample_temperature_uses_each_pairs_own_tau():
    x, t = _inputs(3)
    loss = mm_losses.build("clip", tau=0.1, temperature="per_sample", num_samples=20).double()
    with torch.no_grad():
        loss.temperature.logit_scale.copy_(torch.linspace(0.5, 3.0, 20, dtype=torch.float64))
    index = torch.tensor([7, 2, 19, 0, 11, 5])
    got = loss(x, t, index)
    scales = loss.temperature.logit_scale.exp()
    want = clip_reference(x, t, [scales[int(i)] for i in index])
    assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, (x, t)), torch.autograd.grad(want, (x, t))):
        assert_close(g, w)
    assert not list(loss.parameters())  # buffers: no optimiser, no DDP all-reduce


def test_clip_per_sample_temperatures_move_only_where_visited():
    """After backward, tau_i of the batch's samples takes one momentum step on the
    per-anchor gradient (iSogCLR's rule); every other entry is unchanged."""
    x, t = _inputs(4)
    eta, beta = 0.05, 0.7
    loss = mm_losses.build(
        "clip", tau=0.1, temperature="per_sample", num_samples=20, eta=eta, beta=beta
    ).double()
    index = torch.tensor([7, 2, 19, 0, 11, 5])
    before = loss.temperature.logit_scale.clone()
    # the reference: autograd through explicit per-sample log-scales
    log_scale = before[index].clone().requires_grad_(True)
    want = clip_reference(x, t, list(log_scale.exp()))
    (grad,) = torch.autograd.grad(want, log_scale)
    per_anchor = grad * len(index)  # d loss_i / d log_scale_i (the loss is a mean)
    loss(x, t, index).backward()
    after = loss.temperature.logit_scale
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(after[untouched], before[untouched])
    assert_close(loss.temperature.momentum[index], beta * per_anchor)
    assert_close(after[index], before[index] - eta * beta * per_anchor)
    loss.eval()
    with torch.no_grad():
        loss(x, t, index)
    assert torch.equal(loss.temperature.logit_scale, after)  # eval writes nothing


def test_clip_rejects_arguments_its_temperature_mode_does_not_use():
    for kwargs in ({"num_samples": 8}, {"eta": 0.1}, {"tau_min": 0.02}, {"beta": 0.5}):
        with pytest.raises(ValueError, match="unused with temperature='fixed'"):
            mm_losses.build("clip", **kwargs)
    with pytest.raises(ValueError, match="eta unused with temperature='learnable'"):
        mm_losses.build("clip", temperature="learnable", eta=0.1)


def test_clip_learnable_temperature_is_projected_onto_its_bounds():
    x, t = _inputs(4)
    loss = mm_losses.build("clip", temperature="learnable", tau_min=0.05, tau_max=0.5)
    with torch.no_grad():
        loss.temperature.logit_scale.fill_(10.0)  # tau = 4.5e-5, below tau_min
    value = loss(x, t)
    assert loss.diagnostics()["tau"] == pytest.approx(0.05)
    (grad,) = torch.autograd.grad(value, loss.temperature.logit_scale)
    assert grad != 0, "a clamped temperature must keep receiving gradient"


def test_clip_rejects_bad_configuration():
    with pytest.raises(ValueError, match="temperature must be one of"):
        mm_losses.build("clip", temperature="adaptive")
    with pytest.raises(ValueError, match="num_samples"):
        mm_losses.build("clip", temperature="per_sample")
    with pytest.raises(ValueError, match="tau_min <= tau <= tau_max"):
        mm_losses.build("clip", temperature="learnable", tau=5.0)


def siglip_reference(x, t, log_scale, bias):
    """-1/B sum_ij log sigmoid(z_ij (t S_ij + b)), z = +1 on the diagonal, -1 off it."""
    x, t = _normalise(x), _normalise(t)
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = torch.exp(log_scale) * _dot(x[i], t[j]) + bias
            total = total - torch.log(1.0 / (1.0 + torch.exp(-z * logit)))
    return total / n


def test_siglip_matches_reference_with_paper_initialisation():
    x, t = _inputs(5)
    loss = mm_losses.build("siglip").double()
    assert float(loss.logit_scale.detach()) == pytest.approx(math.log(10))
    assert float(loss.logit_bias.detach()) == pytest.approx(-10.0)
    got = loss(x, t)
    want = siglip_reference(x, t, loss.logit_scale, loss.logit_bias)
    params = (x, t, loss.logit_scale, loss.logit_bias)
    assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        assert_close(g, w)


def test_siglip_fixed_has_no_parameters():
    loss = mm_losses.build("siglip", learnable=False, tau=0.5, logit_bias=-1.0)
    assert list(loss.parameters()) == []
    x, t = _inputs(6)
    assert_close(loss(x, t), siglip_reference(x, t, torch.tensor(math.log(2.0)), -1.0))


def cyclip_reference(x, t, scale, in_modal, cross_modal):
    clip = clip_reference(x, t, [scale] * x.shape[0])
    x, t = _normalise(x), _normalise(t)
    n = x.shape[0]
    inmodal = sum(
        (_dot(x[i], x[j]) - _dot(t[i], t[j])) ** 2 for i in range(n) for j in range(n)
    ) / (n * n)
    crossmodal = sum(
        (_dot(x[i], t[j]) - _dot(x[j], t[i])) ** 2 for i in range(n) for j in range(n)
    ) / (n * n)
    return clip + in_modal * inmodal + cross_modal * crossmodal


@pytest.mark.parametrize(("in_modal", "cross_modal"), [(0.25, 0.25), (1.0, 0.0), (0.0, 2.0)])
def test_cyclip_matches_reference(in_modal, cross_modal):
    x, t = _inputs(7)
    loss = mm_losses.build(
        "cyclip", tau=0.25, in_modal_weight=in_modal, cross_modal_weight=cross_modal
    )
    _compare(loss(x, t), cyclip_reference(x, t, 4.0, in_modal, cross_modal), (x, t))


def test_cyclip_consistency_terms_vanish_for_identical_modalities():
    x, _ = _inputs(8)
    clip = mm_losses.build("clip", tau=0.1)(x, x)
    cyclip = mm_losses.build("cyclip", tau=0.1)(x, x)
    assert_close(cyclip, clip)


@pytest.mark.parametrize("temperature", ["fixed", "learnable"])
def test_clip_fused_path_equals_the_autograd_path_across_chunks(monkeypatch, temperature):
    monkeypatch.setattr(clip_module, "_CHUNK_ELEMENTS", 16 * 70)  # 4 chunks of 16 rows + 6
    x, t = _inputs(9, batch=70)
    fused = mm_losses.build("clip", tau=0.05, temperature=temperature).double()
    plain = mm_losses.build("clip", tau=0.05, temperature=temperature).double()
    plain._can_fuse = lambda *args: False
    got, want = fused(x, t), plain(x, t)
    assert "Fused" in type(got.grad_fn).__name__
    params = [x, t, *fused.parameters()]
    assert_close(got, want)
    grads = torch.autograd.grad(got, params)
    for g, w in zip(grads, torch.autograd.grad(want, [x, t, *plain.parameters()])):
        assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_clip_fused_path_refuses_a_second_backward():
    x, t = _inputs(10)
    value = mm_losses.build("clip")(x, t)
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        value.backward()
