"""The additive (tempered naive-Bayes) baseline of the GHM CLIP task."""

import pytest
import torch

from mm_data.ghm import (
    GHMConfig,
    JointGHM,
    additive_clip_losses,
    bayes_clip_losses,
    best_additive_alpha,
    leaf_given_root,
    sample_clip,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_additive_posterior_is_exact_bayes_on_a_one_level_tree():
    """With one level the leaves are independent given the root, so untempered naive Bayes
    (alpha = 1) is the exact posterior and its CLIP losses equal Bayes' sample by sample."""
    joint = JointGHM(GHMConfig(n_layer=1, n_child=5, vocab=4, p=0.3), dtype=torch.float64)
    batch = sample_clip(joint, 64, torch.Generator().manual_seed(0), k=3)
    torch.testing.assert_close(
        additive_clip_losses(joint, batch, 1.0), bayes_clip_losses(joint, batch)
    )
    assert best_additive_alpha(joint, 400, torch.Generator().manual_seed(1), k=3) == 1.0


def test_leaf_given_root_is_the_path_product():
    ghm = JointGHM(GHMConfig(n_layer=3, n_child=2, vocab=4, p=0.3)).text
    rows = leaf_given_root(ghm)
    torch.testing.assert_close(rows.sum(-1), torch.ones(8, 4, dtype=torch.float64))
    # leaf 5 = node 5 of level 3, under node 2 of level 2, under node 1 of level 1
    path = ghm.matrix(1, 1).double() @ ghm.matrix(2, 2).double() @ ghm.matrix(3, 5).double()
    torch.testing.assert_close(rows[5], path)


def test_additive_is_worse_than_bayes_on_a_deep_tree():
    joint = JointGHM(GHMConfig(n_layer=3, n_child=3, vocab=6, p=0.3), dtype=torch.float64)
    alpha = best_additive_alpha(joint, 1000, torch.Generator().manual_seed(0))
    batch = sample_clip(joint, 2000, torch.Generator().manual_seed(1), k=4)
    diff = additive_clip_losses(joint, batch, alpha) - bayes_clip_losses(joint, batch)
    assert float(diff.mean()) > 6 * float(diff.std()) / diff.numel() ** 0.5
    with pytest.raises(ValueError, match="alphas is empty"):
        best_additive_alpha(joint, 10, torch.Generator(), alphas=())
