"""Tests for mm_eval.alignment against slow references written here (loops, sets, sums)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mm_eval.alignment import (
    METRICS,
    alignment_score,
    cka,
    cknna,
    clip_outliers,
    cycle_knn,
    edit_distance_knn,
    hsic_biased,
    hsic_unbiased,
    knn_indices,
    layer_alignment,
    lcs_knn,
    mutual_knn,
    svcca,
    unbiased_cka,
)


def unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def related(n=60, seed=0, noise=0.5):
    """Two views of the same latent: aligned but not identical."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 6, generator=g, dtype=torch.float64)
    a = z @ torch.randn(6, 12, generator=g, dtype=torch.float64)
    b = z @ torch.randn(6, 9, generator=g, dtype=torch.float64)
    a = a + noise * torch.randn(a.shape, generator=g, dtype=torch.float64)
    b = b + noise * torch.randn(b.shape, generator=g, dtype=torch.float64)
    return F.normalize(a, dim=1), F.normalize(b, dim=1)


# ------------------------------------------------------------ slow references (loops, sets)


def ref_knn(x, k):
    """For each i, the k other rows with the largest inner product, best first (a loop)."""
    n = len(x)
    out = []
    for i in range(n):
        sims = [(float(x[i] @ x[j]), j) for j in range(n) if j != i]
        sims.sort(key=lambda t: -t[0])
        out.append([j for _, j in sims[:k]])
    return out


def ref_lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
            )
    return table[-1][-1]


def ref_levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def ref_hsic_biased(k, l):  # noqa: E741
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h)


def ref_hsic_unbiased(k, l):  # noqa: E741
    """Song et al. (2012), term by term with explicit sums over index tuples."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    term1 = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))  # tr(K~ L~)
    term2 = sum(kt[i, j] for i in range(n) for j in range(n)) * sum(
        lt[i, j] for i in range(n) for j in range(n)
    )
    term3 = sum(kt[i, j] * lt[j, m] for i in range(n) for j in range(n) for m in range(n))
    return (term1 + term2 / ((n - 1) * (n - 2)) - 2 * term3 / (n - 2)) / (n * (n - 3))


# ------------------------------------------------------------------------------- kNN


def test_knn_indices_match_a_loop_and_the_blocks_do_not_matter():
    x = unit(37, 5, 1)
    want = ref_knn(x, 6)
    for block in (1, 7, 37, 1000):
        assert knn_indices(x, 6, block_size=block).tolist() == want


def test_knn_metrics_match_set_and_sequence_references():
    a, b = related(50, seed=3)
    k = 7
    na, nb = ref_knn(a, k), ref_knn(b, k)
    mutual = np.mean([len(set(na[i]) & set(nb[i])) / k for i in range(50)])
    cycle = np.mean([any(i in na[j] for j in nb[i]) for i in range(50)])
    lcs = np.mean([ref_lcs(na[i], nb[i]) for i in range(50)])
    edit = 1 - np.mean([ref_levenshtein(na[i], nb[i]) for i in range(50)]) / k
    assert mutual_knn(a, b, topk=k) == pytest.approx(mutual, abs=1e-12)
    assert cycle_knn(a, b, topk=k) == pytest.approx(cycle, abs=1e-12)
    assert lcs_knn(a, b, topk=k) == pytest.approx(lcs, abs=1e-12)
    assert lcs_knn(a, b, topk=k, normalize=True) == pytest.approx(lcs / k, abs=1e-12)
    assert edit_distance_knn(a, b, topk=k) == pytest.approx(edit, abs=1e-12)
    assert 0 < mutual < 1 and 0 < cycle <= 1  # related, not identical: a real test case


def test_knn_metrics_of_a_space_with_itself_are_perfect():
    a = unit(40, 8, 2)
    assert mutual_knn(a, a, topk=5) == 1.0
    assert cycle_knn(a, a, topk=5) == 1.0
    assert lcs_knn(a, a, topk=5) == 5.0
    assert edit_distance_knn(a, a, topk=5) == 1.0


def test_mutual_knn_of_independent_spaces_is_near_chance():
    n, k = 400, 10
    score = mutual_knn(unit(n, 16, 0), unit(n, 16, 1), topk=k)
    assert score == pytest.approx(k / (n - 1), abs=0.02)  # chance overlap: k / (n - 1)


# ---------------------------------------------------------------------------- kernels


def test_hsic_estimators_match_their_explicit_sums():
    a, b = related(12, seed=5)
    k, l = (a @ a.T).numpy(), (b @ b.T).numpy()  # noqa: E741
    rng = np.random.default_rng(0)
    masked = k * (rng.random(k.shape) < 0.5)  # not symmetric, as cknna's masked kernels
    assert float(hsic_unbiased(torch.tensor(masked), torch.tensor(l))) == pytest.approx(
        ref_hsic_unbiased(masked, l), rel=1e-10
    )
    assert float(hsic_biased(torch.tensor(k), torch.tensor(l))) == pytest.approx(
        ref_hsic_biased(k, l), rel=1e-10
    )
    assert float(hsic_unbiased(torch.tensor(k), torch.tensor(l))) == pytest.approx(
        ref_hsic_unbiased(k, l), rel=1e-10
    )
    with pytest.raises(ValueError, match="at least 4"):
        hsic_unbiased(torch.eye(3), torch.eye(3))


def test_cka_matches_the_reference_formula_for_both_kernels():
    a, b = related(30, seed=6)
    for kernel in ("linear", "rbf"):
        if kernel == "linear":
            k, l = (a @ a.T).numpy(), (b @ b.T).numpy()  # noqa: E741
        else:
            da = ((a[:, None] - a[None]) ** 2).sum(-1).numpy()
            db = ((b[:, None] - b[None]) ** 2).sum(-1).numpy()
            k, l = np.exp(-da / 2), np.exp(-db / 2)  # noqa: E741
        want = ref_hsic_biased(k, l) / (
            math.sqrt(ref_hsic_biased(k, k) * ref_hsic_biased(l, l)) + 1e-6
        )
        assert cka(a, b, kernel=kernel) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="kernel"):
        cka(a, b, kernel="poly")


def test_cka_is_invariant_to_rotation_and_isotropic_scaling():
    a, b = related(40, seed=7)
    q, _ = torch.linalg.qr(torch.randn(9, 9, dtype=torch.float64))
    base = cka(a, b, eps=0.0)
    assert cka(a, 3.5 * (b @ q), eps=0.0) == pytest.approx(base, rel=1e-9)
    assert unbiased_cka(a, 0.2 * (b @ q), eps=0.0) == pytest.approx(
        unbiased_cka(a, b, eps=0.0), rel=1e-9
    )
    assert cka(a, a, eps=0.0) == pytest.approx(1.0, abs=1e-12)


def test_unbiased_cka_of_independent_noise_is_near_zero_and_biased_is_not():
    a, b = unit(300, 64, 10), unit(300, 64, 11)
    assert abs(unbiased_cka(a, b)) < 0.02
    assert cka(a, b) > 0.1  # the biased estimator's offset at N=300, D=64
    clipped = unbiased_cka(a, b, clip_hsic=True)
    assert 0.0 <= clipped < 0.02


def test_cknna_with_every_neighbour_is_unbiased_cka_and_matches_masked_sums():
    a, b = related(20, seed=8)
    assert cknna(a, b) == pytest.approx(unbiased_cka(a, b), rel=1e-9)
    k, l = (a @ a.T).numpy(), (b @ b.T).numpy()  # noqa: E741
    topk = 5

    def mask_of(m):
        out = np.zeros_like(m)
        for i in range(len(m)):
            others = sorted((j for j in range(len(m)) if j != i), key=lambda j: -m[i, j])
            out[i, others[:topk]] = 1
        return out

    mk, ml = mask_of(k), mask_of(l)
    kl = ref_hsic_unbiased(mk * ml * k, mk * ml * l)
    kk, ll = ref_hsic_unbiased(mk * k, mk * k), ref_hsic_unbiased(ml * l, ml * l)
    want = kl / (math.sqrt(kk * ll) + 1e-6)
    assert cknna(a, b, topk=topk) == pytest.approx(want, rel=1e-8)


def test_svcca_is_one_for_a_linear_copy_and_lower_for_noise():
    a = unit(200, 10, 12)  # D = cca_dim: the kept directions span the whole space
    mix = torch.randn(10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert svcca(a, a @ mix) == pytest.approx(1.0, abs=1e-6)
    wide = unit(200, 30, 14)
    shuffled = 4.0 * wide[:, torch.randperm(30, generator=torch.Generator().manual_seed(2))]
    assert svcca(wide, shuffled) == pytest.approx(1.0, abs=1e-6)  # same standardised space
    assert svcca(a, unit(200, 10, 13)) < 0.5
    with pytest.raises(ValueError, match="cca_dim"):
        svcca(a[:, :5], a[:, :5])


# ------------------------------------------------------------------------ the pair API


def test_alignment_score_normalises_and_dispatches_every_metric():
    a, b = related(40, seed=14)
    raw_a, raw_b = 5 * a, 0.1 * b  # unnormalised rows: the score normalises them
    assert alignment_score("mutual_knn", raw_a, raw_b, topk=5) == mutual_knn(a, b, topk=5)
    assert alignment_score("cka", raw_a, raw_b) == pytest.approx(cka(a, b), rel=1e-6)
    for metric in METRICS:
        extra = {"cca_dim": 5} if metric == "svcca" else {}
        value = alignment_score(metric, raw_a, raw_b, topk=5, **extra)
        assert math.isfinite(value), metric


def test_bad_input_names_the_problem():
    a = unit(20, 4, 0)
    with pytest.raises(ValueError, match="unknown alignment metric 'knn'"):
        alignment_score("knn", a, a)
    with pytest.raises(ValueError, match="20 rows, B has 19"):
        alignment_score("mutual_knn", a, a[:19])
    with pytest.raises(ValueError, match="topk 20 must be < N = 20"):
        alignment_score("mutual_knn", a, a, topk=20)
    bad = a.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite.*1 of 20"):
        alignment_score("cka", a, bad)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        alignment_score("cka", a, a[None])


# --------------------------------------------------------------------- layers and models


def test_clip_outliers_thresholds():
    x = torch.arange(1, 201, dtype=torch.float32).view(2, 4, 25)  # sample 0: 1..100
    per_sample = torch.tensor([torch.quantile(x[i].flatten(), 0.9) for i in range(2)]).mean()
    assert torch.equal(clip_outliers(x, 0.9), x.clamp(-per_sample, per_sample))
    values = x.flatten().sort().values
    exact = values[int(0.9 * 200)]
    assert torch.equal(clip_outliers(x, 0.9, precise=True), x.clamp(-exact, exact))
    assert clip_outliers(x, 1.0) is x
    with pytest.raises(ValueError, match="q must be"):
        clip_outliers(x, 0.0)


def pairwise_reference(fa, fb, metric, **kw):
    """Every layer pair scored from scratch with alignment_score (kNN recomputed per pair)."""
    fa, fb = clip_outliers(fa, 0.95), clip_outliers(fb, 0.95)
    return np.array(
        [
            [alignment_score(metric, fa[:, i], fb[:, j], **kw) for j in range(fb.shape[1])]
            for i in range(fa.shape[1])
        ]
    )


@pytest.mark.parametrize("metric", METRICS)
def test_layer_alignment_equals_scoring_every_pair_from_scratch(metric):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(48, 5, generator=g)
    fa = torch.stack([z @ torch.randn(5, 16, generator=g) + torch.randn(48, 16, generator=g)
                      for _ in range(3)], dim=1)  # fmt: skip
    fb = torch.stack([z @ torch.randn(5, 12, generator=g) + 2 * torch.randn(48, 12, generator=g)
                      for _ in range(4)], dim=1)  # fmt: skip
    kw = {"topk": 6}
    result = layer_alignment(fa, fb, metric, **kw)
    want = pairwise_reference(fa, fb, metric, **kw)
    assert result.scores.shape == (3, 4)
    np.testing.assert_allclose(result.scores, want, rtol=1e-6, atol=1e-6)
    assert result.best == pytest.approx(want.max())
    i, j = np.unravel_index(want.argmax(), want.shape)
    assert result.best_layers == (i, j)


def test_layer_alignment_concat_adds_the_all_layers_row_and_column():
    g = torch.Generator().manual_seed(4)
    fa, fb = torch.randn(30, 2, 8, generator=g), torch.randn(30, 3, 8, generator=g)
    result = layer_alignment(fa, fb, "mutual_knn", topk=4, concat=True)
    assert result.scores.shape == (3, 4) and result.layers_a == [-1, 0, 1]
    ca = F.normalize(clip_outliers(fa, 0.95).flatten(1), dim=1)
    cb = F.normalize(clip_outliers(fb, 0.95).flatten(1), dim=1)
    assert result.scores[0, 0] == mutual_knn(ca, cb, topk=4)


def test_layer_alignment_of_a_model_with_itself_peaks_at_one_on_the_diagonal():
    fa = torch.randn(40, 3, 10, generator=torch.Generator().manual_seed(5))
    result = layer_alignment(fa, fa, "mutual_knn", topk=5)
    assert np.allclose(np.diag(result.scores), 1.0) and result.best == 1.0
    with pytest.raises(ValueError, match=r"\(N, layers, D\)"):
        layer_alignment(fa[:, 0], fa[:, 0])


def test_the_package_exports_the_pair_and_layer_scores():
    import mm_eval

    a, b = related(30, seed=1)
    assert mm_eval.alignment_score("mutual_knn", a, b, topk=4) == mutual_knn(a, b, topk=4)
    assert mm_eval.layer_alignment is layer_alignment
