"""Tests for mm_eval.probes: macro-F1 against scikit-learn, and the multi-label probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from mm_eval.probes import f1_per_class, macro_f1, multilabel_probe


def test_f1_matches_scikit_learn_including_empty_classes():
    rng = np.random.default_rng(0)
    pred = rng.random((50, 6)) < 0.3
    target = rng.random((50, 6)) < 0.3
    pred[:, 4] = False
    target[:, 4] = False  # no positive anywhere: F1 0 (zero_division=0)
    want = f1_score(target, pred, average=None, zero_division=0)
    got = f1_per_class(torch.tensor(pred), torch.tensor(target))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    assert float(macro_f1(torch.tensor(pred), torch.tensor(target))) == pytest.approx(want.mean())


def _task(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    y = ((x @ w) > 0.8).float()  # linearly separable, imbalanced classes
    return x, y


def test_probe_learns_a_linear_task_and_reports_its_choice():
    x, y = _task(500, 0)  # one task, split three ways
    train, dev, test = (x[:300], y[:300]), (x[300:400], y[300:400]), (x[400:], y[400:])
    result = multilabel_probe(train, dev, test, lrs=(5e-3, 5e-2), weight_decays=(0.0,),
                              epochs=30, batch_size=64)  # fmt: skip
    assert result["test_f1"] > 0.85 and len(result["test_f1_per_class"]) == 3
    assert result["lr"] in (5e-3, 5e-2) and 1 <= result["epoch"] <= 30
    noise = (torch.randn(300, 8), y[:300])
    chance = multilabel_probe(noise, (torch.randn(100, 8), y[300:400]), (torch.randn(100, 8),
                              y[400:]), epochs=5, lrs=(1e-3,), weight_decays=(0.0,))  # fmt: skip
    assert chance["test_f1"] < result["test_f1"] - 0.3


def test_probe_rejects_bad_shapes():
    x, y = _task(20, 0)
    with pytest.raises(ValueError, match="train: features must be"):
        multilabel_probe((x, y[:10]), (x, y), (x, y))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="dev: features hold NaN"):
        multilabel_probe((x, y), (bad, y), (x, y))
