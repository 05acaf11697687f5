"""Tests parametrised over the registry: a loss is tested by being registered."""

from __future__ import annotations

import math

import pytest
import torch
from _loss_cases import (
    FEATURE_TENSORS,
    NUM_SAMPLES,
    Case,
    all_cases,
    assert_close,
    build,
    make_inputs,
    with_grad,
)

import mm_losses

CASES = all_cases()
IDS = [case.id for case in CASES]

EXPECTED_NAMES = {
    "clip",
    "siglip",
    "sogclr",
    "isogclr",
    "info_sogclr",
    "hybrid_sogclr",
    "vicreg",
    "cyclip",
    "onlineclr",
    "nt_xent",
    "lp_simclr",
    "ghm_clip",
}


def _step(loss: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return loss(**inputs)


def _state(loss: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in loss.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"state entry {key!r} differs"


def test_available_lists_exactly_the_twelve_losses():
    names = set(mm_losses.available())
    missing, unexpected = sorted(EXPECTED_NAMES - names), sorted(names - EXPECTED_NAMES)
    assert not missing and not unexpected, f"missing {missing}, unexpected {unexpected}"
    assert mm_losses.available() == sorted(mm_losses.available())


def test_build_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        mm_losses.build("nope")
    with pytest.raises(ValueError, match="cannot build loss 'clip'"):
        mm_losses.build("clip", not_an_argument=1)


def test_register_refuses_a_second_class_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):

        @mm_losses.register("clip")
        class Other(mm_losses.ContrastiveLoss):
            pass


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_scalar_finite_and_gradients_reach_both_inputs(case: Case):
    loss = build(case)
    assert isinstance(loss, torch.nn.Module)
    inputs = with_grad(make_inputs(loss, case))
    value = _step(loss, inputs)
    assert value.dim() == 0, f"loss must be a scalar, got shape {tuple(value.shape)}"
    assert torch.isfinite(value), f"loss is not finite: {value}"
    value.backward()
    for key in FEATURE_TENSORS:
        if key not in inputs:
            continue
        grad = inputs[key].grad
        assert grad is not None, f"no gradient reaches {key}"
        assert torch.isfinite(grad).all(), f"non-finite gradient on {key}"
        assert grad.abs().sum() > 0, f"zero gradient on {key}"
    for name, param in loss.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), f"non-finite gradient on parameter {name}"
    diagnostics = loss.diagnostics()
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in diagnostics.items())
    assert all(math.isfinite(v) for v in diagnostics.values())
    loss.on_epoch_end(0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip(case: Case):
    first = build(case)
    _step(first, make_inputs(first, case, seed=1))  # state after one step
    second = build(case)
    second.load_state_dict(first.state_dict())
    _assert_same_state(_state(first), _state(second))
    inputs = make_inputs(first, case, seed=2)
    with torch.no_grad():
        a, b = _step(first, inputs), _step(second, inputs)
    assert torch.equal(a, b), f"outputs differ after load_state_dict: {a} vs {b}"
    _assert_same_state(_state(first), _state(second))


def _bad_inputs(case: Case, stateful: bool) -> list[tuple[str, object, str]]:
    """(id, mutation of a valid input dict, regex the ValueError must match)."""

    def replace(**changes):
        def mutate(inputs):
            out = dict(inputs)
            for key, fn in changes.items():
                out[key] = fn(out[key])
            return out

        return mutate

    def poke(value):
        def fn(x):
            x = x.clone()
            x[0, 1] = value
            return x

        return fn

    bad = [
        ("dim_mismatch", replace(text_features=lambda t: t[:, :-1]), r"same shape"),
        ("batch_mismatch", replace(text_features=lambda t: t[:-1]), r"same shape"),
        ("one_dimensional", replace(image_features=lambda x: x[:, 0]), r"shape \[batch, dim\]"),
        ("nan_features", replace(image_features=poke(math.nan)), r"NaN"),
        ("inf_features", replace(text_features=poke(math.inf)), r"NaN or Inf"),
        ("integer_features", replace(image_features=lambda x: x.long()), r"floating point"),
        (
            "mixed_dtypes",
            replace(text_features=lambda t: t.double()),
            r"same dtype, got torch.float32 and torch.float64",
        ),
    ]
    if stateful:

        def set_index(position, value):
            def fn(index):
                index = index.clone()
                index[position] = index[0] if value == "dup" else value
                return index

            return fn

        bad += [
            ("missing_index", replace(index=lambda i: None), r"needs `index`"),
            ("index_too_large", replace(index=set_index(0, NUM_SAMPLES)), r"range"),
            ("index_negative", replace(index=set_index(1, -1)), r"range"),
            ("index_duplicated", replace(index=set_index(1, "dup")), r"duplicated"),
            ("index_int16", replace(index=lambda i: i.short()), r"int64"),
            ("index_float", replace(index=lambda i: i.float()), r"int64"),
            ("index_short", replace(index=lambda i: i[:-1]), r"index must have shape"),
        ]
    return bad


BAD_CASES = []
for _case in CASES:
    _stateful = bool(getattr(build(_case), "stateful", False))
    for _bad_id, _mutate, _match in _bad_inputs(_case, _stateful):
        BAD_CASES.append(pytest.param(_case, _mutate, _match, id=f"{_case.id}-{_bad_id}"))


@pytest.mark.parametrize(("case", "mutate", "match"), BAD_CASES)
def test_bad_input_raises_value_error_and_leaves_state_alone(case: Case, mutate, match: str):
    loss = build(case)
    _step(loss, make_inputs(loss, case, seed=1))  # some state to protect
    before = _state(loss)
    with pytest.raises(ValueError, match=match):
        _step(loss, mutate(make_inputs(loss, case, seed=2)))
    _assert_same_state(before, _state(loss))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_double_cast_follows_state_parameters_and_matches_float64_reference(case: Case):
    """loss.double() on float64 inputs: every buffer and parameter is float64, the state
    is written in float64, and two steps agree with the float32 loss to float32 rounding."""
    reference, cast = build(case), build(case).double()
    assert all(
        v.dtype == torch.float64 for v in cast.state_dict().values() if v.is_floating_point()
    )
    for seed in (1, 2):
        inputs = make_inputs(reference, case, seed=seed)
        double_inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
        got, want = _step(cast, with_grad(double_inputs)), _step(reference, inputs)
        assert got.dtype == torch.float64
        assert_close(got, want.double(), rtol=1e-5, atol=1e-6, what=case.id)
    for key, value in cast.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float64, key
            other = reference.state_dict()[key].double()
            finite = torch.isfinite(other)
            assert torch.equal(torch.isfinite(value), finite), key
            assert_close(value[finite], other[finite], rtol=1e-4, atol=1e-6, what=key)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unknown_and_unused_keyword_arguments_raise(case: Case):
    kwargs = dict(case.kwargs)
    if (
        getattr(mm_losses.get(case.name), "stateful", False)
        or kwargs.get("temperature") == "per_sample"
    ):
        kwargs["num_samples"] = NUM_SAMPLES
    with pytest.raises(ValueError, match=f"cannot build loss '{case.name}'"):
        mm_losses.build(case.name, **kwargs, no_such_argument=1)
    if case.name not in ("isogclr", "clip", "cyclip"):  # the losses with temperature steps
        for name in ("rho", "eta", "beta"):
            with pytest.raises(ValueError):
                mm_losses.build(case.name, **kwargs, **{name: 0.5})


STATEFUL_CASES = [c for c in CASES if build(c).stateful]


@pytest.mark.parametrize("case", STATEFUL_CASES, ids=lambda c: c.id)
def test_int32_index_is_accepted(case: Case):
    loss = build(case)
    inputs = make_inputs(loss, case, seed=3)
    other = build(case)
    a = _step(loss, inputs)
    b = _step(other, {**inputs, "index": inputs["index"].int()})
    assert torch.equal(a, b)
    _assert_same_state(_state(loss), _state(other))


NORMALISED = {
    "clip", "siglip", "cyclip", "onlineclr", "nt_xent", "sogclr", "isogclr", "info_sogclr",
    "hybrid_sogclr",
}  # fmt: skip
RAW = {"vicreg", "lp_simclr", "ghm_clip"}  # defined on raw embeddings (see the README)


@pytest.mark.parametrize("case", [c for c in CASES if c.id == c.name], ids=lambda c: c.id)
def test_one_normalisation_convention(case: Case):
    """Every loss has `normalize`; the similarity losses default to True (same value for
    3x features), the three defined on raw embeddings to False."""
    assert case.name in NORMALISED | RAW
    loss = build(case)
    assert loss.normalize is (case.name in NORMALISED)
    inputs = make_inputs(loss, case, seed=4)
    scaled = {k: 3 * v if k in FEATURE_TENSORS else v for k, v in inputs.items()}
    a, b = _step(build(case), inputs), _step(build(case), scaled)
    if case.name in NORMALISED:
        assert_close(a, b, rtol=1e-5, atol=1e-6)
    else:
        assert not torch.allclose(a, b)
    kwargs = dict(case.kwargs, normalize=case.name in RAW)
    if getattr(mm_losses.get(case.name), "stateful", False):
        kwargs["num_samples"] = NUM_SAMPLES
    flipped = mm_losses.build(case.name, **kwargs)
    assert flipped.normalize is (case.name in RAW)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bf16_autocast_on_cpu_is_finite(case: Case):
    loss = build(case)
    inputs = with_grad(make_inputs(loss, case))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = _step(loss, inputs)
    assert torch.isfinite(value), f"loss under bf16 autocast is not finite: {value}"
    value.backward()
    grad = inputs["image_features"].grad
    assert grad is not None and torch.isfinite(grad).all()


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_matches_cpu(case: Case):
    cpu_loss, cuda_loss = build(case), build(case).cuda()
    inputs = make_inputs(cpu_loss, case)
    expected = _step(cpu_loss, inputs)
    got = _step(cuda_loss, {k: v.cuda() for k, v in inputs.items()})
    assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-5)
