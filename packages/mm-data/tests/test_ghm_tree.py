"""GHM config validation and tree structure: M = (1 - p) P + p softmax(G)."""

import pytest
import torch

from mm_data.ghm import GHM, GHMConfig, JointGHM


def _decompose(m1: torch.Tensor, p1: float, m2: torch.Tensor, p2: float):
    """Recover P and softmax(G) from the same tree at two flip probabilities."""
    perm = (p2 * m1 - p1 * m2) / (p2 - p1)
    noise = (m1 - (1 - p1) * perm) / p1
    return perm, noise


def test_defaults_are_the_paper_setting():
    cfg = GHMConfig()
    assert (cfg.n_layer, cfg.n_child, cfg.vocab, cfg.p) == (4, 3, 10, 0.2)
    assert (cfg.flip_scale, cfg.tree_seed, cfg.translation_invariant, cfg.sigma) == (
        1.0,
        42,
        True,
        1.0,
    )
    assert cfg.n_leaves == 81 and cfg.level_size(2) == 9


@pytest.mark.parametrize(
    "field, value",
    [
        ("p", 1.5),
        ("p", -0.1),
        ("n_child", 0),
        ("n_layer", 0),
        ("vocab", 1),
        ("n_layer", 2.5),
        ("flip_scale", -1.0),
        ("sigma", 0.0),
        ("tree_seed", "x"),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"GHMConfig\.{field} .*{value!r}"):
        GHMConfig(**{field: value})


def test_with_p_validates():
    with pytest.raises(ValueError, match=r"GHMConfig\.p"):
        GHM(GHMConfig()).with_p(1.5)


@pytest.mark.parametrize("ti", [True, False])
def test_matrices_are_row_stochastic_mixtures(ti):
    ghm = GHM(GHMConfig(p=0.3, translation_invariant=ti), dtype=torch.float64)
    other = ghm.with_p(0.1)
    for level in range(1, 5):
        m = ghm.transitions[level - 1]
        expected_groups = 1 if ti else 3 ** (level - 1)
        assert m.shape == (expected_groups, 3, 10, 10)
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1], dtype=torch.float64))
        perm, noise = _decompose(m, 0.3, other.transitions[level - 1], 0.1)
        assert torch.allclose(perm, perm.round(), atol=1e-9)  # 0/1 entries
        assert torch.allclose(perm.sum(-1), torch.ones(1, dtype=torch.float64))
        assert torch.allclose(perm.sum(-2), torch.ones(1, dtype=torch.float64))
        assert (noise > 0).all()
        torch.testing.assert_close(noise.sum(-1), torch.ones(m.shape[:-1], dtype=torch.float64))
        if ti:  # one permutation per level, one noise matrix per child slot
            perm = perm.round()
            assert torch.equal(perm[0, 0], perm[0, 1]) and torch.equal(perm[0, 0], perm[0, 2])
            assert not torch.allclose(noise[0, 0], noise[0, 1])
        elif level > 1:  # own matrices per node
            assert not torch.allclose(m[0, 0], m[1, 0])


def test_p_sweep_shares_permutations_and_noise():
    """P and G depend on tree_seed only: a fresh config at another p gives the same tree."""
    a = JointGHM(GHMConfig(p=0.05), dtype=torch.float64)
    b = JointGHM(GHMConfig(p=0.4), dtype=torch.float64)
    c = a.with_p(0.25)
    for mod in ("text", "image"):
        for level in range(1, 5):
            ma, mb = a.modality(mod).transitions[level - 1], b.modality(mod).transitions[level - 1]
            mc = c.modality(mod).transitions[level - 1]
            pa, na = _decompose(ma, 0.05, mb, 0.4)
            pc, nc = _decompose(ma, 0.05, mc, 0.25)
            torch.testing.assert_close(pa, pc)
            torch.testing.assert_close(na, nc)
            # the mixture is exactly affine in p
            torch.testing.assert_close(mc, 0.75 * pa + 0.25 * na)
    assert c.config.p == 0.25 and c.config.tree_seed == a.config.tree_seed


def test_joint_trees_drawn_text_first_from_tree_seed():
    cfg = GHMConfig(tree_seed=7)
    joint = JointGHM(cfg)
    alone = GHM(cfg)
    for level in range(4):
        assert torch.equal(joint.text.transitions[level], alone.transitions[level])
        assert not torch.equal(joint.text.transitions[level], joint.image.transitions[level])
    again = JointGHM(GHMConfig(tree_seed=7))
    assert torch.equal(again.image.transitions[3], joint.image.transitions[3])
    other = JointGHM(GHMConfig(tree_seed=8))
    assert not torch.equal(other.text.transitions[0], joint.text.transitions[0])
    assert joint.modality("image") is joint.image
    with pytest.raises(ValueError, match="modality"):
        joint.modality("audio")


def test_to_dtype_and_matrix_indexing():
    ghm = GHM(GHMConfig(translation_invariant=False), dtype=torch.float64)
    g32 = ghm.to(dtype=torch.float32)
    assert g32.dtype == torch.float32 and g32.transitions[0].dtype == torch.float32
    torch.testing.assert_close(g32.transitions[2].double(), ghm.transitions[2], atol=1e-7, rtol=0)
    # node 5 of level 2 is slot 2 of node 1 of level 1
    assert torch.equal(ghm.matrix(2, 5), ghm.transitions[1][1, 2])
    with pytest.raises(ValueError, match="level"):
        ghm.matrix(0, 0)
    with pytest.raises(ValueError, match="node"):
        ghm.matrix(1, 3)
    assert torch.allclose(ghm.log_prior.exp(), torch.full((10,), 0.1, dtype=torch.float64))
    with pytest.raises(ValueError, match="floating point"):
        GHM(GHMConfig(), dtype=torch.int64)
