"""Identifiability metrics: regressors, classifiers, MCC, tidy tables and the heatmap."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from mm_eval.identifiability import (
    available_kinds,
    evaluate_prediction,
    evaluate_targets,
    mean_corr_coef,
    plot_identifiability_heatmap,
    standardize,
    write_results_csv,
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Multi-threaded BLAS on a shared 2-core box is erratic; kernel ridge is BLAS-bound."""
    with threadpool_limits(1):
        yield


REGRESSORS = ["linear", "kernel_ridge", "kernel_ridge_nystroem", "mlp_regressor"]


def _split(rng, n, d):
    return rng.standard_normal((n, d)), rng.standard_normal((n, d))


def _reference_r2(y, pred):
    """1 - SS_res / SS_tot per column, averaged."""
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - ss_res / ss_tot))


def test_kinds_registry():
    assert set(available_kinds()) == {
        "linear",
        "kernel_ridge",
        "kernel_ridge_nystroem",
        "mlp_regressor",
        "logistic",
        "mlp_classifier",
        "mcc",
    }


@pytest.mark.parametrize("kind", REGRESSORS)
def test_linear_target_is_predicted(kind):
    rng = np.random.default_rng(0)
    n = 300 if kind == "kernel_ridge" else 600
    zf, zs = _split(rng, n, 4)
    w = rng.standard_normal((4, 2))
    yf, ys = zf @ w + 3.0, zs @ w + 3.0
    r2 = evaluate_prediction(zf, yf, zs, ys, kind)
    assert r2 > (0.999 if kind == "linear" else 0.95), r2


@pytest.mark.parametrize("kind", REGRESSORS)
def test_independent_noise_is_not_predicted(kind):
    rng = np.random.default_rng(1)
    n = 300 if kind == "kernel_ridge" else 600
    zf, zs = _split(rng, n, 3)
    yf, ys = _split(rng, n, 2)
    assert evaluate_prediction(zf, yf, zs, ys, kind) <= 0.05


def test_linear_r2_matches_reference():
    rng = np.random.default_rng(2)
    zf, zs = _split(rng, 200, 3)
    yf = np.c_[zf[:, 0] + 0.5 * rng.standard_normal(200), zf[:, 1] ** 2]
    ys = np.c_[zs[:, 0] + 0.5 * rng.standard_normal(200), zs[:, 1] ** 2]
    a, b = standardize(zf, zs)
    coef, *_ = np.linalg.lstsq(np.c_[a, np.ones(200)], yf, rcond=None)
    expected = _reference_r2(ys, np.c_[b, np.ones(200)] @ coef)
    assert evaluate_prediction(zf, yf, zs, ys, "linear") == pytest.approx(expected, abs=1e-10)


def test_nonlinear_target_kernel_ridge_beats_linear():
    rng = np.random.default_rng(3)
    zf, zs = _split(rng, 400, 2)
    yf, ys = np.sin(2 * zf[:, :1]) * zf[:, 1:], np.sin(2 * zs[:, :1]) * zs[:, 1:]
    linear = evaluate_prediction(zf, yf, zs, ys, "linear")
    exact = evaluate_prediction(zf, yf, zs, ys, "kernel_ridge")
    scalable = evaluate_prediction(zf, yf, zs, ys, "kernel_ridge_nystroem")
    assert linear < 0.1
    assert exact > 0.9 and scalable > 0.9


def test_scalable_matches_exact_on_moderate_problem():
    """A fixed invertible nonlinear map of 5 latents plus 1% noise, as in the simulation."""
    rng = np.random.default_rng(0)
    w1 = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    w2 = np.linalg.qr(rng.standard_normal((5, 5)))[0]

    def encode(c):
        h = c @ w1
        h = np.tanh(np.where(h > 0, h, 0.2 * h) @ w2)
        return h + 0.01 * h.std(0) * rng.standard_normal(h.shape)

    cf, cs = _split(rng, 600, 5)
    zf, zs = encode(cf), encode(cs)
    linear = evaluate_prediction(zf, cf, zs, cs, "linear")
    exact = evaluate_prediction(zf, cf, zs, cs, "kernel_ridge")
    scalable = evaluate_prediction(zf, cf, zs, cs, "kernel_ridge_nystroem")
    assert exact > 0.9 and linear < exact - 0.05
    assert abs(scalable - exact) < 0.02, (exact, scalable)


def test_loo_ridge_path_matches_sklearn_ridgecv():
    """The shared leave-one-out ridge (one eigendecomposition for every alpha and target)
    picks the alpha RidgeCV picks and predicts what RidgeCV predicts, intercept included."""
    from sklearn.linear_model import RidgeCV

    from mm_eval.identifiability import _loo_ridge_path

    rng = np.random.default_rng(11)
    f = rng.standard_normal((300, 40)) @ rng.standard_normal((40, 40)) + 3.0  # correlated
    f_test = rng.standard_normal((50, 40)) @ rng.standard_normal((40, 40)) + 3.0
    alphas = (10.0, 1.0, 0.1, 0.01)
    path = _loo_ridge_path(f, alphas)
    for y in (f[:, :3] @ rng.standard_normal((3, 2)) + rng.standard_normal((300, 2)),
              rng.standard_normal((300, 1)) + 5.0):  # fmt: skip
        reference = RidgeCV(alphas=alphas).fit(f, y)
        scored = path(y)
        best = max(range(len(alphas)), key=lambda k: scored[k][0])
        assert alphas[best] == reference.alpha_
        assert scored[best][0] == pytest.approx(reference.best_score_, rel=1e-6)
        pred = (f_test - f.mean(0)) @ scored[best][1] + y.mean(0)
        np.testing.assert_allclose(pred, reference.predict(f_test).reshape(pred.shape),
                                   rtol=1e-6, atol=1e-8)  # fmt: skip
        # the leave-one-out score by brute force: refit without each sample in turn
        alpha, errors = alphas[best], []
        for i in range(300):
            keep = np.arange(300) != i
            fk, yk = f[keep], y[keep]
            fkc = fk - fk.mean(0)
            coef = np.linalg.solve(fkc.T @ fkc + alpha * np.eye(40), fkc.T @ (yk - yk.mean(0)))
            errors.append((y[i] - ((f[i] - fk.mean(0)) @ coef + yk.mean(0))) ** 2)
        assert scored[best][0] == pytest.approx(-np.mean(errors), rel=1e-8)


def test_evaluate_targets_shares_the_nystroem_fit_without_changing_scores():
    rng = np.random.default_rng(12)
    zf, zs = _split(rng, 400, 3)
    targets_f = {"a": np.sin(zf[:, :2]), "b": zf[:, 2:] ** 2, "noise": rng.standard_normal(400)}
    targets_s = {"a": np.sin(zs[:, :2]), "b": zs[:, 2:] ** 2, "noise": rng.standard_normal(400)}
    rows = evaluate_targets(zf, zs, targets_f, targets_s, {"r2": "kernel_ridge_nystroem"})
    for row in rows:
        alone = evaluate_prediction(
            zf, targets_f[row["target"]], zs, targets_s[row["target"]], "kernel_ridge_nystroem"
        )
        assert row["r2"] == pytest.approx(alone, abs=1e-10), row["target"]
    assert rows[0]["r2"] > 0.9 and rows[2]["r2"] < 0.05


def test_accuracy_for_discrete_factors():
    rng = np.random.default_rng(5)
    zf, zs = _split(rng, 400, 3)
    yf, ys = (zf[:, 0] > 0).astype(int) + 2 * (zf[:, 1] > 0), (zs[:, 0] > 0) + 2 * (zs[:, 1] > 0)
    for kind in ("logistic", "mlp_classifier"):
        assert evaluate_prediction(zf, yf, zs, ys.astype(float), kind) > 0.9
        noise_f, noise_s = rng.integers(0, 4, 400), rng.integers(0, 4, 400)
        assert evaluate_prediction(zf, noise_f, zs, noise_s, kind) < 0.4  # chance 0.25
    one_class = np.zeros(400)
    assert evaluate_prediction(zf, one_class, zs, one_class, "logistic") == 1.0
    with pytest.raises(ValueError, match="integer class labels"):
        evaluate_prediction(zf, zf[:, 0], zs, zs[:, 0], "logistic")


def _reference_mcc(z, y):
    """Brute force over all permutations of the columns of z."""
    d = z.shape[1]
    corr = np.corrcoef(z.T, y.T)[:d, d:]
    return max(
        np.mean([abs(corr[p[k], k]) for k in range(d)]) for p in itertools.permutations(range(d))
    )


def test_mcc():
    rng = np.random.default_rng(6)
    y = rng.standard_normal((500, 4))
    z = y[:, [2, 0, 3, 1]] * np.array([-3.0, 0.5, 2.0, -0.1]) + 7.0
    assert mean_corr_coef(z, y) == pytest.approx(1.0, abs=1e-12)
    independent = rng.standard_normal((500, 4))
    assert mean_corr_coef(independent, y) < 0.15
    mixed = y @ rng.standard_normal((4, 4)) + 0.5 * independent
    assert mean_corr_coef(mixed, y) == pytest.approx(_reference_mcc(mixed, y), abs=1e-12)
    zs = rng.standard_normal((500, 4))
    ys = zs[:, [1, 0, 3, 2]]
    zf, yf = y[:, [1, 0, 3, 2]], y
    assert evaluate_prediction(zf, yf, zs, ys, "mcc") == pytest.approx(1.0)
    # a wider code than target: matched on the target's dims, with a warning naming both
    wide = np.concatenate([z, rng.standard_normal((500, 2))], axis=1)
    with pytest.warns(UserWarning, match="6-dim code against a 4-dim target"):
        assert mean_corr_coef(wide, y) == pytest.approx(1.0, abs=1e-12)
    with pytest.warns(UserWarning, match="only 4 pairs"):
        evaluate_prediction(wide, y, wide, y, "mcc")


def test_accepts_torch_and_1d():
    rng = np.random.default_rng(7)
    zf, zs = _split(rng, 200, 3)
    r2 = evaluate_prediction(
        torch.from_numpy(zf), torch.from_numpy(zf[:, 0]), torch.from_numpy(zs), zs[:, 0]
    )
    assert r2 == pytest.approx(1.0)


def test_evaluate_targets_rows_csv_and_heatmap(tmp_path):
    rng = np.random.default_rng(8)
    zf, zs = _split(rng, 300, 3)
    targets_f = {"c": zf[:, :2], "noise": rng.standard_normal((300, 2))}
    targets_s = {"c": zs[:, :2], "noise": rng.standard_normal((300, 2))}
    metrics = {"r2_linear": "linear", "r2_nonlinear": "kernel_ridge_nystroem"}
    rows = evaluate_targets(zf, zs, targets_f, targets_s, metrics, encoder="h1")
    assert [r["target"] for r in rows] == ["c", "noise"]
    assert list(rows[0]) == ["encoder", "target", "r2_linear", "r2_nonlinear"]
    assert rows[0]["r2_linear"] > 0.99 and rows[1]["r2_nonlinear"] < 0.05
    extra = {"encoder": "h2", "target": "c", "acc": 0.5}
    path = write_results_csv(
        [*rows, extra], tmp_path / "out" / "results.csv", ["encoder", "target", "r2_linear"]
    )
    read = list(csv.DictReader(path.open()))
    assert [r["encoder"] for r in read] == ["h1", "h1", "h2"]
    assert read[2]["r2_linear"] == "" and float(read[0]["r2_linear"]) > 0.99
    png = plot_identifiability_heatmap(
        [*rows, extra],
        tmp_path / "heatmap.png",
        row_keys=("encoder", "target"),
        metric_keys=("r2_linear", "r2_nonlinear"),
        title="test",
    )
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((np.zeros((10, 2)), np.zeros((9, 1)), np.zeros((5, 2)), np.zeros((5, 1))), "train_y"),
        ((np.zeros((10, 2)), np.zeros((10, 1)), np.zeros((5, 2)), np.zeros((4, 1))), "test_y"),
        (
            (np.full((10, 2), np.nan), np.zeros((10, 1)), np.zeros((5, 2)), np.zeros((5, 1))),
            "train_z",
        ),
        ((np.zeros((10, 2)), np.zeros((10, 1)), np.zeros((5, 2)), [np.inf] * 5), "test_y"),
        ((np.zeros((0, 2)), np.zeros((0, 1)), np.zeros((5, 2)), np.zeros((5, 1))), "train_z"),
        ((np.zeros((10, 2)), np.zeros((10, 1)), np.zeros((5, 3)), np.zeros((5, 1))), "test_z"),
    ],
)
def test_bad_input_names_the_argument(args, name):
    with pytest.raises(ValueError, match=name):
        evaluate_prediction(*args, kind="linear")


def test_bad_kind_and_tables(tmp_path):
    z = np.zeros((10, 2))
    with pytest.raises(ValueError, match="unknown kind"):
        evaluate_prediction(z, z, z, z, kind="svm")
    with pytest.raises(ValueError, match="train_targets"):
        evaluate_targets(z, z, {"c": z}, {"s": z}, {"r2": "linear"})
    with pytest.raises(ValueError, match="metrics"):
        evaluate_targets(z, z, {"c": z}, {"c": z}, {"r2": "nope"})
    with pytest.raises(ValueError, match=r"target 'c'.*train_y"):
        evaluate_targets(z, z, {"c": np.zeros(9)}, {"c": np.zeros(10)}, {"r2": "linear"})
    with pytest.raises(ValueError, match="rows"):
        plot_identifiability_heatmap([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="r2_missing"):
        plot_identifiability_heatmap(
            [{"encoder": "a", "target": "c", "r2": 1.0}],
            tmp_path / "x.png",
            metric_keys=("r2_missing",),
        )
    with pytest.raises(ValueError, match="z"):
        mean_corr_coef(np.zeros((5, 2)), np.zeros((4, 2)))
