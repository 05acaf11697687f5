"""Exact BP against brute-force enumeration of every node value on a tiny tree."""

import itertools
import math

import numpy as np
import pytest
import torch

from mm_data.ghm import (
    GHM,
    GHMConfig,
    JointGHM,
    bayes_denoising_mean,
    bayes_next_token_log_probs,
    bayes_zero_shot_log_probs,
    clip_log_score,
    first_leaf_log_probs,
    gaussian_leaf_evidence,
    leaf_posterior,
    level_messages,
    next_token_log_probs,
    posterior_mean,
    root_message,
    root_posterior,
    sample_conditional_denoising,
    sample_denoising,
    sample_joint,
    sample_tree,
)

TINY = dict(n_layer=2, n_child=2, vocab=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class BruteForceTree:
    """Every assignment of all node values of one tree and its probability (numpy, loops)."""

    def __init__(self, ghm: GHM):
        cfg = ghm.config
        self.v = cfg.vocab
        self.nodes = [(lv, k) for lv in range(cfg.n_layer + 1) for k in range(cfg.n_child**lv)]
        self.n_leaves = cfg.n_leaves
        mats = {(lv, k): ghm.matrix(lv, k).double().cpu().numpy() for lv, k in self.nodes if lv > 0}
        index = {node: i for i, node in enumerate(self.nodes)}
        assign = np.array(list(itertools.product(range(self.v), repeat=len(self.nodes))))
        prob = np.full(len(assign), 1.0 / self.v)
        for a_i, a in enumerate(assign):
            for lv, k in self.nodes[1:]:
                parent = a[index[(lv - 1, k // cfg.n_child)]]
                prob[a_i] *= mats[(lv, k)][parent, a[index[(lv, k)]]]
        self.assign, self.prob, self.index = assign, prob, index
        self.root = assign[:, 0]
        self.leaves = assign[:, len(self.nodes) - self.n_leaves :]
        self.n_layer, self.n_child = cfg.n_layer, cfg.n_child

    def leaves_likelihood_given_root(self, leaves: np.ndarray) -> np.ndarray:
        """p(leaves | root = y) for every y."""
        match = (self.leaves == leaves).all(1)
        return np.array([self.prob[match & (self.root == y)].sum() * self.v for y in range(self.v)])


@pytest.fixture(scope="module", params=[True, False], ids=["ti", "non_ti"])
def tiny(request):
    cfg = GHMConfig(**TINY, p=0.35, tree_seed=3, translation_invariant=request.param)
    joint = JointGHM(cfg, dtype=torch.float64)
    return joint, BruteForceTree(joint.text), BruteForceTree(joint.image)


def _samples(joint, n, seed=0):
    return sample_joint(joint, n, torch.Generator().manual_seed(seed))


def test_root_posterior_matches_brute_force(tiny):
    joint, bt, _ = tiny
    text = _samples(joint, 6).text.leaves
    got = root_posterior(joint.text, text).exp().numpy()
    for b in range(text.shape[0]):
        lik = bt.leaves_likelihood_given_root(text[b].numpy())
        np.testing.assert_allclose(got[b], lik / lik.sum(), rtol=1e-9, atol=1e-12)


def test_root_posterior_misspecified_uses_given_matrices(tiny):
    joint, _, _ = tiny
    other = joint.with_p(0.1)
    bt = BruteForceTree(other.text)
    text = _samples(joint, 4).text.leaves
    got = root_posterior(other.text, text).exp().numpy()
    for b in range(4):
        lik = bt.leaves_likelihood_given_root(text[b].numpy())
        np.testing.assert_allclose(got[b], lik / lik.sum(), rtol=1e-9, atol=1e-12)


def test_root_message_and_level_messages_match_brute_force(tiny):
    joint, bt, _ = tiny
    text = _samples(joint, 4, seed=1).text.leaves
    levels = level_messages(joint.text, text)
    expanded = level_messages(joint.text, text, expand_to_leaves=True)
    msg = root_message(joint.text, text)
    assert [tuple(m.shape) for m in levels] == [(4, 1, 3), (4, 2, 3)]
    assert all(tuple(m.shape) == (4, 4, 3) for m in expanded)
    for b in range(4):
        x = text[b].numpy()
        for lv in range(bt.n_layer):
            span = bt.n_child ** (bt.n_layer - lv)
            for k in range(bt.n_child**lv):
                col = bt.index[(lv, k)]
                under = slice(k * span, (k + 1) * span)
                match = (bt.leaves[:, under] == x[under]).all(1)
                lik = np.array(
                    [
                        bt.prob[match & (bt.assign[:, col] == u)].sum()
                        / bt.prob[bt.assign[:, col] == u].sum()
                        for u in range(bt.v)
                    ]
                )
                want = np.log(lik / lik.sum())
                np.testing.assert_allclose(levels[lv][b, k].numpy(), want, rtol=1e-9, atol=1e-9)
                for leaf in range(k * span, (k + 1) * span):
                    np.testing.assert_allclose(expanded[lv][b, leaf].numpy(), want, atol=1e-9)
        lik = bt.leaves_likelihood_given_root(x)
        got = torch.log_softmax(msg[b], 0).numpy()
        np.testing.assert_allclose(got, np.log(lik / lik.sum()), atol=1e-9)


def _brute_leaf_posterior(bt, z, sigma, ext=None):
    """p(leaf_j = v | z, ext) by enumeration: [n_leaves, V]."""
    w = bt.prob * np.exp(-((z[None, :] - bt.leaves) ** 2).sum(1) / (2 * sigma**2))
    if ext is not None:
        w = w * np.exp(ext[bt.root])
    post = np.zeros((bt.n_leaves, bt.v))
    for j in range(bt.n_leaves):
        for v in range(bt.v):
            post[j, v] = w[bt.leaves[:, j] == v].sum()
    return post / w.sum()


@pytest.mark.parametrize("with_root_message", [False, True])
def test_denoising_posterior_matches_brute_force(tiny, with_root_message):
    joint, bt_text, bt_image = tiny
    sigma = 0.8
    batch = sample_conditional_denoising(joint, 5, torch.Generator().manual_seed(2), sigma=sigma)
    ext = root_message(joint.text, batch.text) if with_root_message else None
    post = leaf_posterior(joint.image, batch.noisy_image, sigma=sigma, root_message=ext)
    mean = posterior_mean(joint.image, batch.noisy_image, sigma=sigma, root_message=ext)
    values = np.arange(bt_image.v)
    for b in range(5):
        e = None
        if with_root_message:
            e = np.log(bt_text.leaves_likelihood_given_root(batch.text[b].numpy()))
        want = _brute_leaf_posterior(bt_image, batch.noisy_image[b].numpy(), sigma, e)
        np.testing.assert_allclose(post[b].exp().numpy(), want, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(mean[b].numpy(), want @ values, rtol=1e-8, atol=1e-12)
    if with_root_message:
        got = bayes_denoising_mean(joint, batch.text, batch.noisy_image, sigma=sigma)
        torch.testing.assert_close(got, mean)


@pytest.mark.parametrize("with_image", [False, True])
def test_next_token_posterior_matches_brute_force(tiny, with_image):
    joint, bt_text, bt_image = tiny
    s = _samples(joint, 5, seed=3)
    text, image = s.text.leaves, s.image.leaves
    ext = root_message(joint.image, image) if with_image else None
    got = next_token_log_probs(joint.text, text, root_message=ext).exp().numpy()
    got_short = next_token_log_probs(joint.text, text[:, :-1], root_message=ext).exp().numpy()
    np.testing.assert_allclose(got, got_short)
    assert got.shape == (5, bt_text.n_leaves - 1, bt_text.v)
    for b in range(5):
        x = text[b].numpy()
        w = bt_text.prob.copy()
        if with_image:
            w = w * bt_image.leaves_likelihood_given_root(image[b].numpy())[bt_text.root]
        for j in range(bt_text.n_leaves - 1):
            prefix = (bt_text.leaves[:, : j + 1] == x[: j + 1]).all(1)
            want = np.array([w[prefix & (bt_text.leaves[:, j + 1] == v)].sum() for v in range(3)])
            np.testing.assert_allclose(got[b, j], want / want.sum(), rtol=1e-8, atol=1e-12)
    if with_image:
        bayes = bayes_next_token_log_probs(joint, image, text[:, :-1]).exp().numpy()
        np.testing.assert_allclose(bayes, got)


def test_zero_shot_first_leaf_posterior_matches_brute_force(tiny):
    joint, bt_text, bt_image = tiny
    image = _samples(joint, 5, seed=4).image.leaves
    got = bayes_zero_shot_log_probs(joint, image).exp().numpy()
    direct = first_leaf_log_probs(joint.text, root_posterior(joint.image, image)).exp().numpy()
    np.testing.assert_allclose(got, direct)
    for b in range(5):
        w = bt_text.prob * bt_image.leaves_likelihood_given_root(image[b].numpy())[bt_text.root]
        want = np.array([w[bt_text.leaves[:, 0] == c].sum() for c in range(3)])
        np.testing.assert_allclose(got[b], want / want.sum(), rtol=1e-8)


def test_clip_score_is_pointwise_mutual_information(tiny):
    joint, bt_text, bt_image = tiny
    s = _samples(joint, 4, seed=5)
    text, image = s.text.leaves, s.image.leaves
    lt, li = root_posterior(joint.text, text), root_posterior(joint.image, image)
    for b, c in [(0, 0), (0, 1), (2, 3), (3, 3)]:
        pt_y = bt_text.leaves_likelihood_given_root(text[b].numpy())
        pi_y = bt_image.leaves_likelihood_given_root(image[c].numpy())
        joint_p = (pt_y * pi_y).mean()  # uniform root prior
        want = math.log(joint_p / (pt_y.mean() * pi_y.mean()))
        got = clip_log_score(lt[b], li[c], joint.log_prior).item()
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_float32_bp_agrees_with_float64():
    cfg = GHMConfig(p=0.2, tree_seed=0)
    j64 = JointGHM(cfg, dtype=torch.float64)
    j32 = j64.to(dtype=torch.float32)
    b = sample_conditional_denoising(j64, 64, torch.Generator().manual_seed(0))
    m64 = bayes_denoising_mean(j64, b.text, b.noisy_image)
    m32 = bayes_denoising_mean(j32, b.text, b.noisy_image.float())
    torch.testing.assert_close(m32.double(), m64, atol=2e-4, rtol=0)
    n64 = bayes_next_token_log_probs(j64, b.image, b.text)
    n32 = bayes_next_token_log_probs(j32, b.image, b.text)
    torch.testing.assert_close(n32.double(), n64, atol=2e-4, rtol=0)
    r64, r32 = root_posterior(j64.text, b.text), root_posterior(j32.text, b.text)
    torch.testing.assert_close(r32.double(), r64, atol=2e-4, rtol=0)


def test_lookup_and_generic_upward_paths_agree():
    """The leaf-combination tables equal the plain message recursion (non-TI included)."""
    from mm_data.ghm.belief_propagation import _upward

    for ti in (True, False):
        ghm = GHM(GHMConfig(p=0.3, translation_invariant=ti), dtype=torch.float64)
        leaves = sample_tree(ghm, 16, torch.Generator().manual_seed(0)).leaves
        full = _upward(ghm, leaves, need="all")
        below = _upward(ghm, leaves, need="below")
        root = _upward(ghm, leaves, need="root")
        for lv in range(ghm.config.n_layer):
            a = torch.log_softmax(full.below[lv], 0)
            torch.testing.assert_close(torch.log_softmax(below.below[lv], 0), a)
        a = torch.log_softmax(full.root, 0)
        torch.testing.assert_close(torch.log_softmax(root.root, 0), a)


def test_posterior_mean_orthogonality_monte_carlo():
    """E[yhat^2] = E[yhat x] for the posterior mean yhat = E[x | z] (paper tree)."""
    ghm = JointGHM(GHMConfig(p=0.2)).image
    gen = torch.Generator().manual_seed(0)
    diffs = []
    for _ in range(16):
        batch = sample_denoising(ghm, 1024, gen)
        yhat = posterior_mean(ghm, batch.z).double()
        diffs.append((yhat * (yhat - batch.x.double())).sum(1))
    d = torch.cat(diffs)
    se = d.std() / math.sqrt(d.numel())
    assert abs(d.mean()) < 4 * se, (d.mean(), se)
    # and the check has power: a shrunk estimator fails it
    shrunk = (0.9 * yhat * (0.9 * yhat - batch.x.double())).sum(1)
    assert shrunk.mean() < -10 * shrunk.std() / math.sqrt(shrunk.numel())


def test_strided_inputs_give_the_same_answers():
    joint = JointGHM(GHMConfig(p=0.2))
    b = sample_conditional_denoising(joint, 8, torch.Generator().manual_seed(0))
    text = torch.stack([b.text, b.text], dim=2)[:, :, 0]  # non-contiguous view
    noisy = torch.stack([b.noisy_image, b.noisy_image], dim=2)[:, :, 1]
    assert not text.is_contiguous() and not noisy.is_contiguous()
    torch.testing.assert_close(
        bayes_denoising_mean(joint, text, noisy), bayes_denoising_mean(joint, b.text, b.noisy_image)
    )
    torch.testing.assert_close(
        bayes_next_token_log_probs(joint, text, text),
        bayes_next_token_log_probs(joint, b.text, b.text),
    )
    torch.testing.assert_close(root_posterior(joint.text, text), root_posterior(joint.text, b.text))


def test_gaussian_leaf_evidence():
    ghm = GHM(GHMConfig(**TINY, p=0.2))
    z = torch.tensor([[0.0, 1.0, 2.5, -1.0]])
    ev = gaussian_leaf_evidence(ghm, z, sigma=2.0)
    want = -((z[:, :, None] - torch.arange(3.0)) ** 2) / 8.0
    torch.testing.assert_close(ev, want)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda g: root_posterior(g, torch.zeros(2, 5, dtype=torch.long)), r"shape \[B, 4\]"),
        (lambda g: root_posterior(g, torch.zeros(4, dtype=torch.long)), r"shape \[B, 4\]"),
        (lambda g: root_posterior(g, torch.full((2, 4), 3)), r"values must be in \[0, 3\)"),
        (lambda g: root_posterior(g, torch.full((2, 4), -1)), r"values must be in \[0, 3\)"),
        (lambda g: root_posterior(g, torch.zeros(2, 4)), "integer leaf values"),
        (lambda g: root_posterior(g), "exactly one of leaves"),
        (
            lambda g: root_posterior(
                g, torch.zeros(2, 4, dtype=torch.long), root_message=torch.zeros(3, 3)
            ),
            r"root_message must have shape \[2, 3\]",
        ),
        (lambda g: posterior_mean(g, torch.zeros(2, 3)), r"noisy must have shape \[B, 4\]"),
        (lambda g: posterior_mean(g, torch.zeros(2, 4, dtype=torch.long)), "float tensor"),
        (lambda g: posterior_mean(g, torch.full((2, 4), math.nan)), "finite"),
        (lambda g: posterior_mean(g, torch.zeros(2, 4), sigma=0.0), "sigma must be > 0"),
        (lambda g: next_token_log_probs(g, torch.zeros(2, 2, dtype=torch.long)), "text must"),
        (lambda g: first_leaf_log_probs(g, torch.zeros(2, 4)), r"shape \[B, 3\]"),
    ],
)
def test_bad_inputs_raise_value_error(call, match):
    ghm = GHM(GHMConfig(**TINY, p=0.2))
    with pytest.raises(ValueError, match=match):
        call(ghm)


def test_mismatched_batch_sizes_raise():
    joint = JointGHM(GHMConfig(**TINY, p=0.2))
    with pytest.raises(ValueError, match="batch sizes differ"):
        bayes_denoising_mean(joint, torch.zeros(2, 4, dtype=torch.long), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="batch sizes differ"):
        bayes_next_token_log_probs(
            joint, torch.zeros(2, 4, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="vocab size"):
        clip_log_score(torch.zeros(2, 3), torch.zeros(2, 4), joint.log_prior)


def test_bp_tables_belong_to_the_bp_module_built_once_per_tree():
    from mm_data.ghm.belief_propagation import _leaf_tables

    ghm = GHM(GHMConfig(p=0.3))
    assert not any(name.startswith(("_combo_h", "_combo_msg", "_leaf_rows")) for name in vars(ghm))
    tables = _leaf_tables(ghm)
    assert _leaf_tables(ghm) is tables  # cached
    shifted = ghm.with_p(0.1)
    assert _leaf_tables(shifted) is not tables  # other matrices, other tables
    assert not torch.equal(_leaf_tables(shifted).combo_h, tables.combo_h)
