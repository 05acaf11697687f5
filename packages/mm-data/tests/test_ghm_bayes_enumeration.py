"""Exact Bayes risks by enumerating every leaf configuration of a 3-level tree, against the
Monte-Carlo estimates of :func:`bayes_risk_samples` (which run belief propagation).

With X the text leaves, I the image leaves and n leaves per tree:
- next-word prediction: E[-1/(n-1) sum_{j>=2} log p(x_j | x_<j, I)] = [H(X, I) - H(X_1, I)] / (n - 1)
  (chain rule of entropy);
- zero-shot classification (label = first text leaf): H(X_1 | I) = H(X_1, I) - H(I);
- CLIP with K = 2 (one independent negative): per direction
  E log(1 + S(t-, i) / S(t+, i)), S = p(t, i) / (p(t) p(i)), t- drawn from the marginal.
"""

import itertools

import numpy as np
import pytest
import torch

from mm_data.ghm import GHM, GHMConfig, JointGHM, bayes_risk_samples, standard_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def leaves_given_root(ghm: GHM) -> np.ndarray:
    """p(leaves | root) [V, V**n_leaves] by summing over every internal-node assignment
    (leaf configurations in itertools.product order)."""
    cfg = ghm.config
    v, n_child = cfg.vocab, cfg.n_child
    nodes = [(lv, k) for lv in range(cfg.n_layer + 1) for k in range(n_child**lv)]
    index = {node: i for i, node in enumerate(nodes)}
    assign = np.array(list(itertools.product(range(v), repeat=len(nodes))))
    prob = np.ones(len(assign))
    for lv, k in nodes[1:]:
        mat = ghm.matrix(lv, k).double().cpu().numpy()
        prob *= mat[assign[:, index[(lv - 1, k // n_child)]], assign[:, index[(lv, k)]]]
    leaves = assign[:, len(nodes) - cfg.n_leaves :]
    code = leaves @ (v ** np.arange(cfg.n_leaves - 1, -1, -1))
    out = np.zeros((v, v**cfg.n_leaves))
    np.add.at(out, (assign[:, 0], code), prob)
    return out


def entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@pytest.fixture(scope="module")
def enumerated():
    cfg = GHMConfig(n_layer=3, n_child=2, vocab=2, p=0.3, tree_seed=5)
    joint = JointGHM(cfg, dtype=torch.float64)
    v, n = cfg.vocab, cfg.n_leaves
    text, image = leaves_given_root(joint.text), leaves_given_root(joint.image)
    np.testing.assert_allclose(text.sum(1), 1.0)  # each row a distribution over leaf configs
    prior = np.exp(joint.log_prior.cpu().numpy())
    p_xi = np.einsum("r,rx,ri->xi", prior, text, image)  # [V**n text configs, V**n image configs]
    first = np.array(list(itertools.product(range(v), repeat=n)))[:, 0]  # first text leaf
    p_x1_i = np.stack([p_xi[first == a].sum(0) for a in range(v)])  # [V, V**n]
    return joint, p_xi, p_x1_i


def _close(joint, task, exact, k=4, n=20_000):
    losses = bayes_risk_samples(joint, task, n, 2_000, torch.Generator().manual_seed(11), k=k)
    estimate, se = float(losses.double().mean()), standard_error(losses)
    assert abs(estimate - exact) < 4 * se, (task, estimate, exact, se)


def test_next_word_bayes_risk_is_the_entropy_rate(enumerated):
    joint, p_xi, p_x1_i = enumerated
    n = joint.config.n_leaves
    _close(joint, "nwp", (entropy(p_xi) - entropy(p_x1_i)) / (n - 1))


def test_zero_shot_bayes_risk_is_the_conditional_entropy_of_the_first_leaf(enumerated):
    joint, p_xi, p_x1_i = enumerated
    _close(joint, "zsc", entropy(p_x1_i) - entropy(p_xi.sum(0)))


def test_clip_bayes_risk_with_one_negative(enumerated):
    joint, p_xi, _ = enumerated
    p_x, p_i = p_xi.sum(1), p_xi.sum(0)
    s = p_xi / np.outer(p_x, p_i)  # PMI score exp(log S)
    # image anchor: E_{(t+, i)} E_{t-} log(1 + S(t-, i) / S(t+, i)); the text anchor is the
    # same expression with the roles swapped
    ratio = s[None, :, :] / s[:, None, :]  # [t+, t-, i]: S(t-, i) / S(t+, i)
    image_anchor = np.einsum("ti,u,tui->", p_xi, p_x, np.log1p(ratio))
    ratio = s[:, None, :] / s[:, :, None]  # [t, i+, i-]: S(t, i-) / S(t, i+)
    text_anchor = np.einsum("ti,j,tij->", p_xi, p_i, np.log1p(ratio))
    _close(joint, "clip", image_anchor + text_anchor, k=2)
