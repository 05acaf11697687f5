"""Samplers against the transition matrices (chi-square) and the task batch layouts."""

import math

import pytest
import torch

from mm_data.ghm import (
    GHM,
    GHMConfig,
    JointGHM,
    next_token_log_probs,
    sample_classification,
    sample_clip,
    sample_conditional_denoising,
    sample_denoising,
    sample_joint,
    sample_next_word,
    sample_tree,
    sample_zero_shot,
    sample_zero_shot_prompts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson statistic of ``counts[r, v]`` against row distributions ``probs[r, v]``."""
    n = counts.sum(1, keepdim=True).double()
    expected = n * probs.double()
    keep = expected > 0
    stat = ((counts.double() - expected) ** 2 / expected.clamp_min(1e-300))[keep].sum()
    df = int((n[:, 0] > 0).sum()) * (probs.shape[1] - 1)
    return float(stat), df


def _limit(df: int) -> float:
    """Normal approximation of the chi-square upper tail, about p = 3e-7."""
    return df + 5.0 * math.sqrt(2.0 * df)


def _pair_counts(parents, children, v):
    return torch.bincount(parents * v + children, minlength=v * v).view(v, v)


def _check_tree_sampler(ghm: GHM, n: int, seed: int) -> None:
    cfg = ghm.config
    v, s = cfg.vocab, cfg.n_child
    tree = sample_tree(ghm, n, torch.Generator().manual_seed(seed))
    assert [t.shape for t in tree.levels] == [(n, s**lv) for lv in range(cfg.n_layer + 1)]
    assert all(t.dtype == torch.int64 for t in tree.levels)
    root_counts = torch.bincount(tree.root, minlength=v)[None]
    stat, df = _chi_square(root_counts, torch.full((1, v), 1.0 / v))
    assert stat < _limit(df)
    for level in range(1, cfg.n_layer + 1):
        parents, children = tree.levels[level - 1], tree.levels[level]
        m = ghm.transitions[level - 1]
        for slot in range(s):
            child = children[:, slot::s]  # slot `slot` of every parent
            if m.shape[0] == 1:  # shared by all parents of the level: pool them
                counts = _pair_counts(parents.reshape(-1), child.reshape(-1), v)
                stat, df = _chi_square(counts, m[0, slot])
                assert stat < _limit(df), (level, slot, stat, df)
                # power: the same counts reject a neighbouring p
                wrong = ghm.with_p(cfg.p + 0.1).transitions[level - 1][0, slot]
                assert _chi_square(counts, wrong)[0] > _limit(df)
            else:
                for node in range(parents.shape[1]):
                    counts = _pair_counts(parents[:, node], child[:, node], v)
                    stat, df = _chi_square(counts, m[node, slot])
                    assert stat < _limit(df), (level, node, slot, stat, df)


@pytest.mark.parametrize("ti", [True, False], ids=["ti", "non_ti"])
@pytest.mark.parametrize("joint_children", [True, False], ids=["joint", "one_by_one"])
def test_tree_sampler_matches_transition_matrices(ti, joint_children):
    ghm = GHM(GHMConfig(n_layer=3, n_child=2, vocab=4, p=0.5, translation_invariant=ti))
    if not joint_children:  # force the child-by-child alias sampler
        ghm._combo_samplers.update({lv: None for lv in range(1, 4)})
    _check_tree_sampler(ghm, 12_000, seed=1)


def test_tree_sampler_paper_tree():
    _check_tree_sampler(GHM(GHMConfig(p=0.3)), 4_000, seed=2)


def test_sampling_is_reproducible_from_the_generator():
    joint = JointGHM(GHMConfig())
    a = sample_clip(joint, 8, torch.Generator().manual_seed(5))
    b = sample_clip(joint, 8, torch.Generator().manual_seed(5))
    c = sample_clip(joint, 8, torch.Generator().manual_seed(6))
    assert torch.equal(a.text, b.text) and torch.equal(a.image, b.image)
    assert not torch.equal(a.text, c.text)


def test_joint_sample_shares_the_root():
    joint = JointGHM(GHMConfig())
    s = sample_joint(joint, 64, torch.Generator().manual_seed(0))
    assert torch.equal(s.text.root, s.root) and torch.equal(s.image.root, s.root)
    assert not torch.equal(s.text.leaves, s.image.leaves)


def test_clip_batch_block_structure():
    joint = JointGHM(GHMConfig())
    b, k = 1500, 4
    batch = sample_clip(joint, b, torch.Generator().manual_seed(0), k=k)
    assert batch.text.shape == (b * (k + 1), 81) and batch.image.shape == (b * (k + 1), 81)
    assert (batch.batch_size, batch.k) == (b, k)
    # matched blocks share their roots
    assert torch.equal(batch.text_root[: 2 * b], batch.image_root[: 2 * b])
    # negatives are independent draws: roots agree at rate 1/vocab
    agree = (batch.text_root[2 * b :] == batch.image_root[2 * b :]).double()
    se = math.sqrt(0.1 * 0.9 / agree.numel())
    assert abs(agree.mean().item() - 0.1) < 4 * se
    # ... also against the anchors of both directions
    for anchors, cands in [
        (batch.image_root[:b], batch.text_root),
        (batch.text_root[b : 2 * b], batch.image_root),
    ]:
        for blk in range(2, k + 1):
            rate = (anchors == cands[blk * b : (blk + 1) * b]).double().mean().item()
            assert abs(rate - 0.1) < 4 * math.sqrt(0.09 / b)
    # the trees follow their roots: leaves of matched pairs are far more alike
    same = (batch.text[:b] == batch.text[b : 2 * b]).double().mean()
    assert 0.05 < same < 0.2
    one = sample_clip(joint, 4, torch.Generator().manual_seed(0), k=1)
    assert one.text.shape == (8, 81) and torch.equal(one.text_root, one.image_root)


def test_denoising_noise_is_gaussian_with_sigma():
    ghm = GHM(GHMConfig(sigma=0.5))
    batch = sample_denoising(ghm, 2000, torch.Generator().manual_seed(0))
    noise = (batch.z - batch.x.float()).double()
    assert batch.x.dtype == torch.int64 and batch.z.dtype == torch.float32
    assert abs(noise.mean()) < 4 * 0.5 / math.sqrt(noise.numel())
    assert abs(noise.std() - 0.5) < 0.01
    other = sample_denoising(ghm, 10, torch.Generator().manual_seed(0), sigma=2.0)
    assert other.sigma == 2.0


def test_task_batches_layout():
    joint = JointGHM(GHMConfig())
    gen = torch.Generator().manual_seed(0)
    cd = sample_conditional_denoising(joint, 500, gen)
    assert cd.text.shape == cd.image.shape == cd.noisy_image.shape == (500, 81)
    assert abs((cd.noisy_image - cd.image.float()).std() - 1.0) < 0.02
    nw = sample_next_word(joint, 16, gen)
    assert torch.equal(nw.input, nw.text[:, :-1]) and torch.equal(nw.target, nw.text[:, 1:])
    assert nw.image.shape == (16, 81)
    zs = sample_zero_shot(joint, 16, gen)
    assert torch.equal(zs.label, zs.text[:, 0])
    cl = sample_classification(joint.text, 16, gen)
    assert cl.leaves.shape == (16, 81) and cl.label.shape == (16,)


def test_zero_shot_prompts_follow_the_conditional_text_distribution():
    joint = JointGHM(GHMConfig(vocab=5, p=0.4))
    m = 3000
    prompts = sample_zero_shot_prompts(joint, m, torch.Generator().manual_seed(0))
    assert prompts.shape == (5, m, 81)
    for c in range(5):
        assert (prompts[c, :, 0] == c).all()
        # second leaf given first leaf = c, against exact BP (brute-force tested)
        text = torch.full((1, 81), c)
        probs = next_token_log_probs(joint.text, text)[0, 0].exp()
        counts = torch.bincount(prompts[c, :, 1], minlength=5)[None]
        stat, df = _chi_square(counts, probs[None])
        assert stat < _limit(df)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda j, g: sample_tree(j.text, 0, g), "batch_size"),
        (lambda j, g: sample_clip(j, 4, g, k=0), "k "),
        (lambda j, g: sample_tree(j.text, 4, g, root=torch.zeros(3, dtype=torch.long)), "root"),
        (lambda j, g: sample_tree(j.text, 2, g, root=torch.tensor([0, 10])), "root values"),
        (lambda j, g: sample_zero_shot_prompts(j, 0, g), "m "),
    ],
)
def test_bad_sampler_inputs_raise(call, match):
    joint = JointGHM(GHMConfig())
    with pytest.raises(ValueError, match=match):
        call(joint, torch.Generator().manual_seed(0))
