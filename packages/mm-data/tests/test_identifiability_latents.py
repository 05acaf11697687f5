"""Latent model and invertible mixing of the identifiability simulation."""

from __future__ import annotations

import copy

import pytest
import torch

from mm_data.identifiability import (
    InvertibleMLP,
    LatentConfig,
    LatentModel,
    condition_threshold,
    load_latent_params,
    load_mixing,
    make_mixing,
    random_unit_column_matrices,
    sample_wishart,
    save_mixing,
)


def _reference_forward(f: InvertibleMLP, z: torch.Tensor) -> torch.Tensor:
    """Obviously-correct forward: x = W3 lrelu(W2 lrelu(W1 z)), row vectors, float64."""
    h = z.double()
    for k, layer in enumerate(f.layers):
        h = h @ layer.weight.double().T
        if k < len(f.layers) - 1:
            h = torch.where(h > 0, h, f.negative_slope * h)
    return h


@pytest.fixture(scope="module")
def mixing():
    return make_mixing(15, seed=3)


def test_forward_matches_reference_and_inverse_recovers_input(mixing):
    f1, _ = mixing
    z = torch.randn(512, 15, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = _reference_forward(f1, z)
    torch.testing.assert_close(f1(z.float()).double(), x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f1.inverse(x), z, rtol=1e-9, atol=1e-9)
    # float32 round trip stays close too
    torch.testing.assert_close(f1.inverse(f1(z.float())), z.float(), rtol=1e-3, atol=1e-3)


def test_leaky_relu_inverse(mixing):
    f1, _ = mixing
    y = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(f1.leaky_relu_inverse(f1.act(y)), y)


def test_mixing_is_frozen_and_independent_unless_shared(mixing):
    f1, f2 = mixing
    assert all(not p.requires_grad for p in f1.parameters())
    assert not torch.allclose(f1.layers[0].weight, f2.layers[0].weight)
    g1, g2 = make_mixing(15, seed=3, shared=True)
    assert g1 is g2
    # same seed, same draw
    h1, _ = make_mixing(15, seed=3)
    torch.testing.assert_close(h1.layers[2].weight, f1.layers[2].weight)


def test_condition_numbers_below_threshold(mixing):
    f1, f2 = mixing
    threshold = condition_threshold(15, 3)
    assert float(f1.threshold) == threshold
    for f in (f1, f2):
        assert len(f.layers) == 3
        for w in (layer.weight for layer in f.layers):
            assert float(torch.linalg.cond(w.double())) < threshold
            torch.testing.assert_close(
                torch.linalg.vector_norm(w, dim=0), torch.ones(15), rtol=1e-5, atol=1e-5
            )
            assert w.abs().max() <= 1.0


def test_threshold_is_the_low_quantile_and_cached():
    g = torch.Generator().manual_seed(11)
    conds = torch.linalg.cond(random_unit_column_matrices(25_000, 6, g))
    threshold = condition_threshold(6, 11)
    assert threshold == float(torch.quantile(conds, 0.001))
    assert (conds < threshold).float().mean() == pytest.approx(0.001, abs=2e-4)
    before = condition_threshold.cache_info().hits
    condition_threshold(6, 11)
    assert condition_threshold.cache_info().hits == before + 1


def test_style_change_mask_rate_and_shared_content():
    cfg = LatentConfig(style_change_prob=0.3, c_param=2.0, seed=1)
    batch = LatentModel(cfg).sample(20_000)
    rate = batch.change_mask.float().mean(dim=0)
    assert torch.allclose(rate, torch.full((5,), 0.3), atol=0.02)
    changed = batch.s_tilde != batch.s
    assert torch.equal(changed, batch.change_mask)
    assert torch.equal(batch.z1[:, :5], batch.z2[:, :5])
    assert torch.equal(batch.z1[:, 5:10], batch.s)
    assert torch.equal(batch.z2[:, 5:10], batch.s_tilde)
    delta = (batch.s_tilde - batch.s)[batch.change_mask]
    assert delta.std().item() == pytest.approx(2.0, rel=0.05)
    assert batch.z1.shape == batch.z2.shape == (20_000, 15)
    # no-change and always-change extremes
    assert not LatentModel(LatentConfig(style_change_prob=0.0)).sample(100).change_mask.any()
    assert LatentModel(LatentConfig(style_change_prob=1.0)).sample(100).change_mask.all()


def test_statistical_dependence_covariances_differ_and_match_samples():
    cfg = LatentConfig(statistical_dependence=True, covariances="independent", seed=4)
    model = LatentModel(cfg)
    covs = [model.cov_content, model.cov_style, model.cov_m1, model.cov_m2]
    covs.append(model.cov_style_change)
    for i in range(len(covs)):
        for j in range(i + 1, len(covs)):
            assert not torch.allclose(covs[i], covs[j])
    batch = model.sample(40_000)
    for name, samples, cov in (
        ("c", batch.c, model.cov_content),
        ("s", batch.s, model.cov_style),
        ("m1", batch.m1, model.cov_m1),
        ("m2", batch.m2, model.cov_m2),
    ):
        empirical = torch.cov(samples.double().T)
        err = (empirical - cov).norm() / cov.norm()
        assert err < 0.05, name
    eps = (batch.s_tilde - batch.s).double()
    err = (torch.cov(eps.T) - model.cov_style_change).norm() / model.cov_style_change.norm()
    assert err < 0.05
    # independent latents when the flag is off
    assert LatentModel(LatentConfig()).cov_content is None


@pytest.mark.parametrize("statistical", [False, True])
def test_covariance_is_the_one_samples_follow(statistical):
    """covariance(block) against the empirical covariance of each sampled block (dims differ
    per block so that a block's identity fallback must have the block's own size)."""
    cfg = LatentConfig(
        content_n=3, style_n=4, modality_n=2, c_param=1.5, statistical_dependence=statistical,
        seed=6,
    )  # fmt: skip
    model = LatentModel(cfg)
    batch = model.sample(60_000, generator=torch.Generator().manual_seed(0))
    samples = {"c": batch.c, "s": batch.s, "m1": batch.m1, "m2": batch.m2}
    samples["a"] = batch.s_tilde - batch.s  # style_change_prob 1: every dim changes
    for block, x in samples.items():
        cov = model.covariance(block)
        assert cov.dtype == torch.float64
        err = (torch.cov(x.double().T) - cov).norm() / cov.norm()
        assert err < 0.05, block
    if not statistical:
        assert torch.equal(model.covariance("a"), 2.25 * torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown block 'z'"):
        model.covariance("z")


def test_equal_covariances_share_one_draw_per_size():
    # The original code seeds every Wishart draw identically: blocks of one size are equal.
    # That is the default.
    model = LatentModel(LatentConfig(statistical_dependence=True, seed=3))
    assert model.cfg.covariances == "equal"
    covs = [model.cov_content, model.cov_style, model.cov_m1, model.cov_m2]
    covs.append(model.cov_style_change)
    for cov in covs[1:]:
        assert torch.equal(cov, covs[0])
    x = torch.randn(5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(covs[0], x.T @ x)
    # Blocks of other sizes: the same seed, so the draws differ only by size.
    odd = LatentModel(LatentConfig(content_n=3, style_n=4, statistical_dependence=True))
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(odd.cov_content, x.T @ x)
    assert odd.cov_style.shape == odd.cov_style_change.shape == (4, 4)
    assert torch.equal(odd.cov_style, odd.cov_style_change)
    # The style change then varies like the style itself in every direction.
    batch = model.sample(40_000)
    eps = (batch.s_tilde - batch.s).double()
    err = (torch.cov(eps.T) - torch.cov(batch.s.double().T)).norm() / covs[0].norm()
    assert err < 0.06


def test_wishart_mean_is_df_times_identity():
    g = torch.Generator().manual_seed(0)
    mean = torch.stack([sample_wishart(4, g) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, 4 * torch.eye(4, dtype=torch.float64), atol=0.25, rtol=0)


def test_content_dependent_style_regression_recovers_B():
    cfg = LatentConfig(content_dependent_style=True, style_n=4, content_n=3, seed=2)
    model = LatentModel(cfg)
    assert model.B.shape == (4, 3) and model.a.shape == (4,)
    batch = model.sample(20_000)
    target = (batch.s - model.a).double()
    solution = torch.linalg.lstsq(batch.c.double(), target).solution  # [nc, ns]
    torch.testing.assert_close(solution.T, model.B.double(), atol=0.03, rtol=0)


def test_sampling_is_seeded():
    a = LatentModel(LatentConfig(seed=5)).sample(10)
    b = LatentModel(LatentConfig(seed=5)).sample(10)
    assert torch.equal(a.z1, b.z1)
    g = torch.Generator().manual_seed(0)
    c = LatentModel(LatentConfig(seed=5)).sample(10, generator=g)
    assert not torch.equal(a.z1, c.z1)


def test_save_load_round_trip(tmp_path, mixing):
    f1, f2 = mixing
    cfg = LatentConfig(style_change_prob=0.5, seed=3)
    path = save_mixing(tmp_path / "run" / "mixing.pt", f1, f2, cfg)
    g1, g2, cfg2 = load_mixing(path, expected_cfg=cfg)
    assert cfg2 == cfg
    z = torch.randn(64, 15)
    torch.testing.assert_close(g1(z), f1(z))
    torch.testing.assert_close(g2(z), f2(z))
    assert float(g1.threshold) == float(f1.threshold)
    assert all(not p.requires_grad for p in g2.parameters())
    s1, s2 = make_mixing(15, seed=3, shared=True)
    h1, h2, none_cfg = load_mixing(save_mixing(tmp_path / "shared.pt", s1, s2))
    assert h1 is h2 and none_cfg is None


def test_latent_parameters_travel_with_the_mixing(tmp_path, mixing):
    """The drawn covariances and B, a are saved beside the mixing; a model rebuilt from them
    samples exactly what the original samples, even if the drawing code changed since."""
    f1, f2 = mixing
    cfg = LatentConfig(
        statistical_dependence=True, content_dependent_style=True, covariances="independent",
        seed=8,
    )  # fmt: skip
    model = LatentModel(cfg)
    path = save_mixing(tmp_path / "m.pt", f1, f2, cfg, latent_params=model.parameters())
    params = load_latent_params(path)
    assert set(params) == {"cov_content", "cov_style", "cov_m1", "cov_m2", "cov_style_change",
                           "B", "a"}  # fmt: skip
    # tamper with one parameter: the rebuilt model must use the saved one, not redraw it
    params["B"] = params["B"] * 3
    rebuilt = LatentModel(cfg, params=params)
    g = torch.Generator().manual_seed(1)
    ref_batch = model.sample(500, generator=torch.Generator().manual_seed(1))
    batch = rebuilt.sample(500, generator=g)
    torch.testing.assert_close(batch.c, ref_batch.c)
    expected_s = ref_batch.s.double() + 2 * (ref_batch.c.double() @ model.B.T)
    torch.testing.assert_close(batch.s.double(), expected_s, atol=1e-4, rtol=1e-5)
    # a file without parameters (written before they were saved) answers None
    assert load_latent_params(save_mixing(tmp_path / "old.pt", f1, f2, cfg)) is None
    small = LatentConfig(content_n=3, content_dependent_style=True)
    with pytest.raises(ValueError, match=r"B has shape \(5, 5\), the config needs \(5, 3\)"):
        LatentModel(small, params={"B": params["B"], "a": params["a"]})
    with pytest.raises(ValueError, match="cov_content is given, but the config has statis"):
        LatentModel(small, params=params)
    with pytest.raises(ValueError, match="B is missing"):
        LatentModel(cfg, params={**params, "B": None})
    with pytest.raises(ValueError, match="unknown names"):
        LatentModel(cfg, params={"Sigma": None})


def test_old_mixing_files_map_equal_covariances():
    old = {"statistical_dependence": True, "equal_covariances": False}
    assert LatentConfig.from_dict(old).covariances == "independent"
    assert LatentConfig.from_dict({**old, "equal_covariances": True}).covariances == "equal"


@pytest.mark.parametrize("causal", [False, True])
def test_intervention_replaces_the_mixed_content_only(causal):
    """c' is a permutation of c within the batch; the style still depends on c, the views
    carry c' (so z1, z2 share c' and not c)."""
    cfg = LatentConfig(content_dependent_style=causal, style_change_prob=0.75, seed=2)
    model = LatentModel(cfg)
    plain = model.sample(2000, generator=torch.Generator().manual_seed(5))
    batch = model.sample(2000, generator=torch.Generator().manual_seed(5), intervene=True)
    for name in ("c", "s", "s_tilde", "m1", "m2"):  # the intervention draws last
        assert torch.equal(getattr(batch, name), getattr(plain, name)), name
    assert plain.c_prime is None and torch.equal(plain.z1[:, :5], plain.c)
    # a permutation of the rows of c
    order_c = torch.sort(batch.c[:, 0]).values
    assert torch.equal(torch.sort(batch.c_prime[:, 0]).values, order_c)
    assert (batch.c_prime != batch.c).any(1).float().mean() > 0.99
    assert torch.equal(batch.z1[:, :5], batch.c_prime)
    assert torch.equal(batch.z2[:, :5], batch.c_prime)
    assert torch.equal(batch.z1[:, 5:10], batch.s)

    # the style is predicted by c (causal) and never by c'
    def r2(x, y):
        x1 = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
        coef = torch.linalg.lstsq(x1, y.double()).solution
        res = y.double() - x1 @ coef
        return float(1 - res.var(0).sum() / y.double().var(0).sum())

    assert r2(batch.c_prime, batch.s) < 0.01
    assert (r2(batch.c, batch.s) > 0.5) == causal


def test_sampling_follows_the_generator_device():
    model = LatentModel(LatentConfig(statistical_dependence=True, content_dependent_style=True))
    g = torch.Generator(device="cpu").manual_seed(0)
    assert model.sample(4, generator=g).c.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        gpu = model.sample(4, generator=torch.Generator(device="cuda").manual_seed(0))
        assert gpu.c.device.type == gpu.s.device.type == "cuda"


def test_load_errors_name_the_file(tmp_path, mixing):
    f1, f2 = mixing
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_mixing(missing)
    path = save_mixing(tmp_path / "m.pt", f1, f2)
    with pytest.raises(ValueError, match=r"m\.pt"):
        load_mixing(path, expected_cfg=LatentConfig(modality_n=4))
    payload = torch.load(path, weights_only=True)
    bad = copy.deepcopy(payload)
    bad["f2"]["layers.1.weight"] = torch.zeros(14, 14)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt.*f2"):
        load_mixing(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_mixing(tmp_path / "junk.pt")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"content_n": -1}, "content_n"),
        ({"content_n": 0}, "content_n"),
        ({"style_n": -2}, "style_n"),
        ({"modality_n": -1}, "modality_n"),
        ({"style_change_prob": 1.5}, "style_change_prob"),
        ({"style_change_prob": -0.1}, "style_change_prob"),
        ({"c_param": -1.0}, "c_param"),
        ({"c_param": float("nan")}, "c_param"),
        ({"statistical_dependence": "yes"}, "statistical_dependence"),
        ({"covariances": "same"}, "covariances must be one of"),
        ({"statistical_dependence": True, "covariances": 1}, "covariances"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LatentConfig(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="batch_size"):
        LatentModel(LatentConfig()).sample(0)
    with pytest.raises(ValueError, match="negative_slope"):
        InvertibleMLP(4, negative_slope=0.0)
    with pytest.raises(ValueError, match="n_layers"):
        InvertibleMLP(4, n_layers=0)
    with pytest.raises(ValueError, match="weights"):
        InvertibleMLP(4, n_layers=2, weights=[torch.eye(4)])
    f = InvertibleMLP(4)
    with pytest.raises(ValueError, match="last dim 4"):
        f(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="unknown fields"):
        LatentConfig.from_dict({"content_n": 5, "colour": 1})
