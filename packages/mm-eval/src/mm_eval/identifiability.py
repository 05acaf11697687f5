"""Identifiability metrics: how well do learned encodings predict each ground-truth factor?

Daunhawer et al., "Identifiability Results for Multimodal Contrastive Learning", ICLR 2023,
sections 5.1-5.2: predictors are fit on one set of encodings (the validation set) and scored
on another (the test set); encodings are standardised with the fit set's statistics.
Continuous factors are scored by R^2 (uniform average over target dims) of a linear and a
nonlinear regressor, discrete factors by accuracy of a logistic regression and an MLP
classifier. The mean correlation coefficient (MCC) is an extra, permutation-level measure.

    r2 = evaluate_prediction(val_h, val_c, test_h, test_c, kind="kernel_ridge_nystroem")
    rows = evaluate_targets(val_h, test_h, {"c": val_c}, {"c": test_c},
                            metrics={"r2_linear": "linear", "r2_nonlinear": "kernel_ridge"},
                            encoder="h1")
    write_results_csv(rows, "results.csv", columns=["encoder", "target", "r2_linear"])
    plot_identifiability_heatmap(rows, "heatmap.png", row_keys=("encoder", "target"),
                                 metric_keys=("r2_linear", "r2_nonlinear"))

Kinds (`available_kinds()`):
- "linear": R^2 of ordinary least squares (with intercept).
- "kernel_ridge": R^2 of exact RBF kernel ridge, GridSearchCV over alpha in
  {1, .1, .01, .001} and gamma in logspace(-2, 2, 4), 3-fold CV (the authors' setting;
  O(n^3) per fit).
- "kernel_ridge_nystroem": R^2 of the scalable stand-in: Nystroem RBF features (1,000
  components) for each gamma of the same grid, ridge over the same alpha grid with
  efficient leave-one-out choice of alpha (RidgeCV); the (gamma, alpha) with the best
  leave-one-out score wins.
- "mlp_regressor": R^2 of a small scikit-learn MLP regressor.
- "logistic", "mlp_classifier": accuracy for discrete targets.
- "mcc": mean |Pearson correlation| after Hungarian matching (matched on the fit set,
  scored on the score set); warns when code and target have different dims.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.kernel_approximation import Nystroem
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier, MLPRegressor

__all__ = [
    "KRR_ALPHAS",
    "KRR_GAMMAS",
    "NYSTROEM_ALPHAS",
    "NYSTROEM_COMPONENTS",
    "available_kinds",
    "evaluate_prediction",
    "evaluate_targets",
    "fit_predict_scaled_targets",
    "kernel_ridge_grid",
    "mean_corr_coef",
    "nystroem_kernel_ridge",
    "nystroem_kernel_ridge_targets",
    "plot_identifiability_heatmap",
    "standardize",
    "write_results_csv",
]

KRR_ALPHAS: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
KRR_GAMMAS: tuple[float, ...] = tuple(float(g) for g in np.logspace(-2, 2, 4))
# The same alpha grid as exact kernel ridge (selected by leave-one-out instead of 3-fold CV).
NYSTROEM_ALPHAS: tuple[float, ...] = KRR_ALPHAS
NYSTROEM_COMPONENTS = 1000

ArrayLike = Any  # numpy array, torch tensor or nested sequence


# ----------------------------------------------------------------------------- input checks


def _as_matrix(x: ArrayLike, name: str) -> np.ndarray:
    """A [n, d] float64 array; 1-d input becomes one column. Raises ValueError naming `name`."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__} ({err})") from err
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-d or 2-d, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_rows(z: np.ndarray, y: np.ndarray, z_name: str, y_name: str) -> None:
    if z.shape[0] != y.shape[0]:
        raise ValueError(
            f"{z_name} has {z.shape[0]} rows but {y_name} has {y.shape[0]}; they must match"
        )


def _check_inputs(train_z, train_y, test_z, test_y):
    arrays = {
        "train_z": _as_matrix(train_z, "train_z"),
        "train_y": _as_matrix(train_y, "train_y"),
        "test_z": _as_matrix(test_z, "test_z"),
        "test_y": _as_matrix(test_y, "test_y"),
    }
    _check_rows(arrays["train_z"], arrays["train_y"], "train_z", "train_y")
    _check_rows(arrays["test_z"], arrays["test_y"], "test_z", "test_y")
    for a, b in (("train_z", "test_z"), ("train_y", "test_y")):
        if arrays[a].shape[1] != arrays[b].shape[1]:
            raise ValueError(
                f"{a} has {arrays[a].shape[1]} columns but {b} has {arrays[b].shape[1]}"
            )
    return arrays["train_z"], arrays["train_y"], arrays["test_z"], arrays["test_y"]


def standardize(train_z: ArrayLike, test_z: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(z - mean_fit) / std_fit for both sets, statistics of the fit set (constant dims: std 1)."""
    train = _as_matrix(train_z, "train_z")
    test = _as_matrix(test_z, "test_z")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train_z has {train.shape[1]} columns but test_z has {test.shape[1]}")
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


# ------------------------------------------------------------------------------- predictors


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """R^2 = 1 - SS_res / SS_tot per target dim, uniform average over dims."""
    return float(r2_score(y_true, y_pred, multioutput="uniform_average"))


def _scaled(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit-set-standardised y, mean, std): kernel ridge shares one alpha grid over targets."""
    mean = y.mean(axis=0)
    std = y.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (y - mean) / std, mean, std


def fit_predict_scaled_targets(
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    train_z: np.ndarray,
    train_y: np.ndarray,
    test_z: np.ndarray,
) -> np.ndarray:
    """Run fit(y_scaled, train_z, test_z) on fit-set-standardised targets; unscale predictions.

    Kernel ridge has no intercept, so targets are centred (and scaled, for a shared alpha
    grid); R^2 per target dim is invariant to this affine map.
    """
    scaled, mean, std = _scaled(train_y)
    pred = fit(scaled, train_z, test_z)
    return pred.reshape(len(test_z), -1) * std + mean


def _linear(train_z, train_y, test_z, test_y, seed: int) -> float:
    model = LinearRegression().fit(train_z, train_y)
    return _r2(test_y, model.predict(test_z))


def kernel_ridge_grid(
    train_z: np.ndarray,
    train_y: np.ndarray,
    test_z: np.ndarray,
    *,
    alphas: Sequence[float] = KRR_ALPHAS,
    gammas: Sequence[float] = KRR_GAMMAS,
    cv: int = 3,
) -> tuple[np.ndarray, dict]:
    """Predictions of exact RBF kernel ridge, (alpha, gamma) by GridSearchCV R^2 (O(n^3))."""
    grid = {"alpha": list(alphas), "gamma": list(gammas)}
    search = GridSearchCV(KernelRidge(kernel="rbf"), grid, cv=cv).fit(train_z, train_y)
    return search.predict(test_z), dict(search.best_params_)


def _kernel_ridge(train_z, train_y, test_z, test_y, seed: int) -> float:
    def fit(y, zf, zs):
        return kernel_ridge_grid(zf, y, zs)[0]

    return _r2(test_y, fit_predict_scaled_targets(fit, train_z, train_y, test_z))


def _loo_ridge_path(
    f_train: np.ndarray, alphas: Sequence[float]
) -> Callable[[np.ndarray], list[tuple[float, np.ndarray]]]:
    """Ridge with an unpenalised intercept on features `f_train`, for every alpha at once:
    returns score(y) -> [(leave-one-out score, coef) per alpha], where the score is minus
    the mean squared leave-one-out error over y's columns (RidgeCV's default criterion)
    and coef maps centred features to centred predictions. One eigendecomposition of the
    centred features' Gram matrix serves every alpha and every target."""
    n = len(f_train)
    fc = f_train - f_train.mean(axis=0)
    # eigendecomposition of the p x p Gram matrix (cheaper than an SVD of the n x p
    # features); with G = F_c V, every quantity below is written in G and eigenvalues lam
    lam, v = np.linalg.eigh(fc.T @ fc)
    lam = np.clip(lam, 0.0, None)
    g = fc @ v
    g2 = g**2

    def score(y: np.ndarray) -> list[tuple[float, np.ndarray]]:
        yc = y - y.mean(axis=0)
        gty = g.T @ yc
        out = []
        for alpha in alphas:
            inv = 1.0 / (lam + alpha)
            fitted = g @ (inv[:, None] * gty)
            hat = 1.0 / n + g2 @ inv  # diagonal of the hat matrix, intercept included
            loo = (yc - fitted) / (1.0 - hat)[:, None]
            coef = v @ (inv[:, None] * gty)
            out.append((-float(np.mean(loo**2)), coef))
        return out

    return score


def nystroem_kernel_ridge_targets(
    train_z: np.ndarray,
    train_ys: Mapping[str, np.ndarray],
    test_z: np.ndarray,
    *,
    n_components: int = NYSTROEM_COMPONENTS,
    gammas: Sequence[float] = KRR_GAMMAS,
    alphas: Sequence[float] = NYSTROEM_ALPHAS,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, dict]]:
    """RBF ridge on Nystroem features for several targets of the same inputs: per target,
    (gamma, alpha) with the best leave-one-out score; {name: (test predictions, params)}.

    The features and their Gram eigendecomposition depend on the inputs and gamma only, so
    they are computed once per gamma for all targets (what makes the per-factor table
    cheap); the score set is transformed once per gamma that some target chose."""
    m = min(n_components, len(train_z))
    fitted: dict[float, tuple[Nystroem, np.ndarray]] = {}  # gamma -> (features, train mean)
    best: dict[str, tuple[float, float, float, np.ndarray]] = {}  # loo, gamma, alpha, coef
    for gamma in gammas:
        features = Nystroem(kernel="rbf", gamma=gamma, n_components=m, random_state=seed)
        f_train = features.fit_transform(train_z)
        fitted[gamma] = (features, f_train.mean(axis=0))
        path = _loo_ridge_path(f_train, alphas)
        for name, y in train_ys.items():
            for alpha, (loo, coef) in zip(alphas, path(y.reshape(len(y), -1))):
                if name not in best or loo > best[name][0]:
                    best[name] = (loo, gamma, alpha, coef)
    test_features: dict[float, np.ndarray] = {}
    out = {}
    for name, y in train_ys.items():
        _, gamma, alpha, coef = best[name]
        features, f_mean = fitted[gamma]
        if gamma not in test_features:
            test_features[gamma] = features.transform(test_z) - f_mean
        pred = test_features[gamma] @ coef + y.reshape(len(y), -1).mean(axis=0)
        out[name] = (pred, {"gamma": gamma, "alpha": alpha})
    return out


def nystroem_kernel_ridge(
    train_z: np.ndarray,
    train_y: np.ndarray,
    test_z: np.ndarray,
    *,
    n_components: int = NYSTROEM_COMPONENTS,
    gammas: Sequence[float] = KRR_GAMMAS,
    alphas: Sequence[float] = NYSTROEM_ALPHAS,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Predictions of RBF ridge on Nystroem features, (gamma, alpha) by leave-one-out score."""
    return nystroem_kernel_ridge_targets(
        train_z, {"y": train_y}, test_z, n_components=n_components, gammas=gammas,
        alphas=alphas, seed=seed,
    )["y"]  # fmt: skip


def _kernel_ridge_nystroem(train_z, train_y, test_z, test_y, seed: int) -> float:
    def fit(y, zf, zs):
        return nystroem_kernel_ridge(zf, y, zs, seed=seed)[0]

    return _r2(test_y, fit_predict_scaled_targets(fit, train_z, train_y, test_z))


def _nystroem_scores(train_z, test_z, train_targets, test_targets, seed: int) -> dict[str, float]:
    """R^2 of every target from one shared Nystroem fit per gamma (as _kernel_ridge_nystroem
    per target, computed together)."""
    scaled = {}
    for name, y in train_targets.items():
        scaled[name] = _scaled(_as_matrix(y, f"train_targets[{name!r}]"))
    preds = nystroem_kernel_ridge_targets(
        train_z, {k: v[0] for k, v in scaled.items()}, test_z, seed=seed
    )
    scores = {}
    for name, (pred, _) in preds.items():
        _, mean, std = scaled[name]
        scores[name] = _r2(_as_matrix(test_targets[name], name), pred * std + mean)
    return scores


def _mlp_regressor(train_z, train_y, test_z, test_y, seed: int) -> float:
    def fit(y, zf, zs):
        model = MLPRegressor(
            hidden_layer_sizes=(256, 256),
            max_iter=300,
            early_stopping=True,
            random_state=seed,
        )
        return model.fit(zf, y.ravel() if y.shape[1] == 1 else y).predict(zs)

    return _r2(test_y, fit_predict_scaled_targets(fit, train_z, train_y, test_z))


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    if not np.all(y == np.round(y)):
        raise ValueError(f"{name} must hold integer class labels for a classification metric")
    return y.astype(np.int64)


def _accuracy(make_model: Callable[[int], Any]):
    def metric(train_z, train_y, test_z, test_y, seed: int) -> float:
        train_l, test_l = _labels(train_y, "train_y"), _labels(test_y, "test_y")
        scores = []
        for k in range(train_l.shape[1]):
            if len(np.unique(train_l[:, k])) < 2:
                pred = np.full(len(test_l), train_l[0, k])  # one class only: predict it
            else:
                pred = make_model(seed).fit(train_z, train_l[:, k]).predict(test_z)
            scores.append(accuracy_score(test_l[:, k], pred))
        return float(np.mean(scores))

    return metric


def _logistic(seed: int):
    return LogisticRegression(max_iter=1000, random_state=seed)


def _mlp_classifier(seed: int):
    return MLPClassifier(
        hidden_layer_sizes=(256,), max_iter=300, early_stopping=True, random_state=seed
    )


def _correlation(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix rho[i, j] = corr(z_i, y_j) (constant columns: 0)."""
    zc = z - z.mean(axis=0)
    yc = y - y.mean(axis=0)
    zn = np.linalg.norm(zc, axis=0)
    yn = np.linalg.norm(yc, axis=0)
    zn = np.where(zn > 0, zn, np.inf)
    yn = np.where(yn > 0, yn, np.inf)
    return (zc / zn).T @ (yc / yn)


def _warn_unequal_dims(z: np.ndarray, y: np.ndarray) -> None:
    if z.shape[1] != y.shape[1]:
        warnings.warn(
            f"MCC of a {z.shape[1]}-dim code against a {y.shape[1]}-dim target: only "
            f"{min(z.shape[1], y.shape[1])} pairs are matched, the other dims are ignored",
            stacklevel=3,
        )


def mean_corr_coef(z: ArrayLike, y: ArrayLike) -> float:
    """MCC = max over one-to-one matchings pi of mean_k |rho(z_pi(k), y_k)| (Hungarian).
    Warns when z and y have different numbers of dims (the unmatched ones are ignored)."""
    zm, ym = _as_matrix(z, "z"), _as_matrix(y, "y")
    _check_rows(zm, ym, "z", "y")
    _warn_unequal_dims(zm, ym)
    corr = np.abs(_correlation(zm, ym))
    rows, cols = linear_sum_assignment(-corr)
    return float(corr[rows, cols].mean())


def _mcc(train_z, train_y, test_z, test_y, seed: int) -> float:
    _warn_unequal_dims(train_z, train_y)
    rows, cols = linear_sum_assignment(-np.abs(_correlation(train_z, train_y)))
    return float(np.abs(_correlation(test_z[:, rows], test_y[:, cols])).diagonal().mean())


_KINDS: dict[str, Callable[..., float]] = {
    "linear": _linear,
    "kernel_ridge": _kernel_ridge,
    "kernel_ridge_nystroem": _kernel_ridge_nystroem,
    "mlp_regressor": _mlp_regressor,
    "logistic": _accuracy(_logistic),
    "mlp_classifier": _accuracy(_mlp_classifier),
    "mcc": _mcc,
}


def available_kinds() -> list[str]:
    """Names accepted by `evaluate_prediction(kind=...)`."""
    return sorted(_KINDS)


def evaluate_prediction(
    train_z: ArrayLike,
    train_y: ArrayLike,
    test_z: ArrayLike,
    test_y: ArrayLike,
    kind: str = "linear",
    *,
    standardize_z: bool = True,
    seed: int = 0,
) -> float:
    """Fit a `kind` predictor of y from z on the fit set, return its score on the score set.

    R^2 (uniform average over target dims) for regressors, accuracy (mean over label
    columns) for classifiers, MCC for "mcc". Encodings are standardised with fit-set stats.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}; available: {available_kinds()}")
    train_z, train_y, test_z, test_y = _check_inputs(train_z, train_y, test_z, test_y)
    if standardize_z:
        train_z, test_z = standardize(train_z, test_z)
    return _KINDS[kind](train_z, train_y, test_z, test_y, seed)


# ------------------------------------------------------------------------- tables and plots


def evaluate_targets(
    train_z: ArrayLike,
    test_z: ArrayLike,
    train_targets: Mapping[str, ArrayLike],
    test_targets: Mapping[str, ArrayLike],
    metrics: Mapping[str, str],
    *,
    target_key: str = "target",
    seed: int = 0,
    **fields: Any,
) -> list[dict[str, Any]]:
    """Tidy rows, one per target: {**fields, target_key: name, column: score for metrics}.

    `metrics` maps output column -> kind, e.g. {"r2_linear": "linear", "r2_nonlinear":
    "kernel_ridge_nystroem"}; `fields` are constant leading columns (e.g. encoder="h1").
    """
    if set(train_targets) != set(test_targets):
        raise ValueError(
            f"train_targets and test_targets name different targets: "
            f"{sorted(train_targets)} vs {sorted(test_targets)}"
        )
    if not train_targets:
        raise ValueError("train_targets is empty")
    if not metrics:
        raise ValueError("metrics is empty")
    for column, kind in metrics.items():
        if kind not in _KINDS:
            raise ValueError(f"metrics[{column!r}]: unknown kind {kind!r}; {available_kinds()}")
    train_s, test_s = standardize(train_z, test_z)
    checked_train, checked_test = {}, {}
    for name in train_targets:
        try:
            _, checked_train[name], _, checked_test[name] = _check_inputs(
                train_s, train_targets[name], test_s, test_targets[name]
            )
        except ValueError as err:
            raise ValueError(f"target {name!r}: {err}") from err
    # kernel_ridge_nystroem: one set of features (and their SVD) per gamma for all targets
    shared = {
        column: _nystroem_scores(train_s, test_s, checked_train, checked_test, seed)
        for column, kind in metrics.items()
        if kind == "kernel_ridge_nystroem"
    }
    rows = []
    for name in train_targets:
        row: dict[str, Any] = dict(fields)
        row[target_key] = name
        for column, kind in metrics.items():
            if column in shared:
                row[column] = shared[column][name]
                continue
            try:
                row[column] = _KINDS[kind](
                    train_s, checked_train[name], test_s, checked_test[name], seed
                )
            except ValueError as err:
                raise ValueError(f"target {name!r}: {err}") from err
        rows.append(row)
    return rows


def write_results_csv(
    rows: Iterable[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None
) -> Path:
    """Write rows as CSV with `columns` (default: keys in first-seen order); missing -> ''."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        raise ValueError("columns is empty (no rows and no columns given)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return path


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and math.isfinite(value)


def plot_identifiability_heatmap(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    row_keys: Sequence[str] = ("encoder", "target"),
    metric_keys: Sequence[str] = ("r2_linear", "r2_nonlinear"),
    *,
    title: str | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> Path:
    """PNG heatmap: one row per result row (labelled by row_keys), one column per metric."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty")
    if not metric_keys:
        raise ValueError("metric_keys is empty")
    for key in (*row_keys, *metric_keys):
        if not any(key in row for row in rows):
            raise ValueError(f"no row has the key {key!r} (row_keys/metric_keys)")
    labels = [" / ".join(str(row.get(k, "")) for k in row_keys) for row in rows]
    values = np.array(
        [[row[k] if _is_number(row.get(k)) else np.nan for k in metric_keys] for row in rows],
        dtype=np.float64,
    )
    fig = Figure(figsize=(1.6 + 1.3 * len(metric_keys), 0.8 + 0.38 * len(rows)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto"
    )
    ax.set_facecolor("0.85")
    ax.set_xticks(range(len(metric_keys)), labels=list(metric_keys), rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=labels)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "–" if np.isnan(v) else f"{v:.2f}"
            dark_cell = not np.isnan(v) and v < vmin + 0.6 * (vmax - vmin)
            ax.text(j, i, text, ha="center", va="center", color="white" if dark_cell else "black")
    fig.colorbar(image, ax=ax, fraction=0.05)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
