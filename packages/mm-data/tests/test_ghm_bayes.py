"""Bayes risks of the four GHM tasks: the reference values, the losses, misspecified BP."""

import math

import pytest
import torch

from mm_data.ghm import (
    TASKS,
    ClipBatch,
    GHMConfig,
    JointGHM,
    bayes_clip_logits,
    bayes_denoising_mean,
    bayes_losses,
    bayes_next_token_log_probs,
    bayes_risk,
    bayes_risk_samples,
    bayes_zero_shot_log_probs,
    clip_log_score,
    k_negative_clip_losses,
    root_posterior,
    sample_clip,
    sample_task_batch,
    standard_error,
    zero_shot_logits,
)

# The authors' reported Bayes risks, p = 0.2, n_layer 4, n_child 3, vocab 10, K 4, sigma 1
SPEC_BAYES = {"clip": 0.581, "zsc": 1.842, "dns": 33.04, "nwp": 1.154}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def paper():
    return JointGHM(GHMConfig(p=0.2, tree_seed=42))


@pytest.mark.parametrize("task", TASKS)
def test_bayes_risk_matches_the_spec_table(paper, task):
    losses = bayes_risk_samples(paper, task, 10_000, 1000, torch.Generator().manual_seed(1))
    risk = losses.double().mean().item()
    assert risk == pytest.approx(SPEC_BAYES[task], rel=0.05), (task, risk)
    assert standard_error(losses) < 0.015 * risk


def test_bayes_risk_is_reproducible_and_batch_size_free(paper):
    a = bayes_risk(paper, "nwp", 300, 100, torch.Generator().manual_seed(3))
    b = bayes_risk(paper, "nwp", 300, 100, torch.Generator().manual_seed(3))
    c = bayes_risk(paper, "nwp", 300, 300, torch.Generator().manual_seed(3))
    assert a == b and isinstance(a, float)
    assert math.isfinite(c)
    assert bayes_risk_samples(paper, "clip", 250, 100).shape == (250,)


def test_k_negative_clip_loss_against_a_loop(paper):
    batch = sample_clip(paper, 5, torch.Generator().manual_seed(0), k=3)
    l1, l2 = bayes_clip_logits(paper, batch)
    assert l1.shape == l2.shape == (5, 3)
    lt = root_posterior(paper.text, batch.text)
    li = root_posterior(paper.image, batch.image)
    b = batch.batch_size
    for i in range(b):
        texts = [i] + [blk * b + i for blk in range(2, 4)]
        images = [b + i] + [blk * b + i for blk in range(2, 4)]
        want1 = [clip_log_score(lt[t], li[i], paper.log_prior) for t in texts]
        want2 = [clip_log_score(lt[b + i], li[m], paper.log_prior) for m in images]
        torch.testing.assert_close(l1[i], torch.stack(want1))
        torch.testing.assert_close(l2[i], torch.stack(want2))
    losses = k_negative_clip_losses(l1, l2)
    manual = [
        -(l1[i, 0] - torch.logsumexp(l1[i], 0)) - (l2[i, 0] - torch.logsumexp(l2[i], 0))
        for i in range(b)
    ]
    torch.testing.assert_close(losses, torch.stack(manual))
    torch.testing.assert_close(bayes_losses(paper, "clip", batch), losses)


def test_per_batch_predictors_shapes(paper):
    gen = torch.Generator().manual_seed(0)
    zs = sample_task_batch(paper, "zsc", 7, gen)
    assert bayes_zero_shot_log_probs(paper, zs.image).shape == (7, 10)
    dn = sample_task_batch(paper, "dns", 7, gen)
    mean = bayes_denoising_mean(paper, dn.text, dn.noisy_image)
    assert mean.shape == (7, 81) and (mean >= 0).all() and (mean <= 9).all()
    nw = sample_task_batch(paper, "nwp", 7, gen)
    logp = bayes_next_token_log_probs(paper, nw.image, nw.input)
    assert logp.shape == (7, 80, 10)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(7, 80))
    nll = -logp.gather(2, nw.target[:, :, None])[:, :, 0].mean(1)
    torch.testing.assert_close(bayes_losses(paper, "nwp", nw), nll)
    sq = ((mean - dn.image.float()) ** 2).sum(1)
    torch.testing.assert_close(bayes_losses(paper, "dns", dn), sq)


@pytest.mark.parametrize("task", ["clip", "dns", "nwp", "zsc"])
def test_misspecified_bp_is_worse_on_shifted_data(task):
    """BP with the p = 0.2 matrices on data at p = 0.35 loses to BP with the true ones."""
    data = JointGHM(GHMConfig(p=0.35, tree_seed=42))
    wrong = data.with_p(0.2)
    gen = torch.Generator().manual_seed(0)
    diffs = []
    for _ in range(4):
        batch = sample_task_batch(data, task, 500, gen)
        diffs.append(bayes_losses(wrong, task, batch) - bayes_losses(data, task, batch))
    d = torch.cat(diffs).double()
    assert d.mean() > 3 * d.std() / math.sqrt(d.numel()), (task, d.mean())
    # bayes_risk's bp= argument runs the same comparison
    assert bayes_risk(data, task, 400, 400, torch.Generator().manual_seed(0), bp=wrong) > 0


def test_zero_shot_logits_is_log_mean_exp():
    img = torch.randn(4, 6)
    prompts = torch.randn(3, 5, 6)
    got = zero_shot_logits(img, prompts)
    want = torch.tensor(
        [
            [
                math.log(sum(math.exp(img[b] @ prompts[c, m]) for m in range(5)) / 5)
                for c in range(3)
            ]
            for b in range(4)
        ]
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zero_shot_logits(img, prompts[:, :1]), img @ prompts[:, 0].T)
    with pytest.raises(ValueError, match="feature dimensions"):
        zero_shot_logits(img, torch.randn(3, 5, 7))
    with pytest.raises(ValueError, match=r"\[n_class, M, d\]"):
        zero_shot_logits(img, torch.randn(3, 6))


def test_bad_risk_arguments_raise(paper):
    with pytest.raises(ValueError, match="task must be one of"):
        bayes_risk(paper, "xyz", 10)
    with pytest.raises(ValueError, match="n_samples"):
        bayes_risk(paper, "clip", 0)
    with pytest.raises(ValueError, match="tree shape"):
        bayes_risk(paper, "clip", 10, bp=JointGHM(GHMConfig(n_layer=3)))
    with pytest.raises(ValueError, match="needs a ClipBatch"):
        bayes_losses(paper, "clip", sample_task_batch(paper, "dns", 2))
    with pytest.raises(ValueError, match="same shape"):
        k_negative_clip_losses(torch.zeros(3, 4), torch.zeros(3, 5))
    assert isinstance(sample_task_batch(paper, "clip", 2), ClipBatch)


@pytest.mark.gpu
def test_cuda_tables_samplers_and_bp_match_cpu():
    import dataclasses

    cpu = JointGHM(GHMConfig(), dtype=torch.float64)
    gpu = cpu.to("cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    for task in TASKS:
        batch = sample_task_batch(gpu, task, 64, gen)
        on_gpu = bayes_losses(gpu, task, batch)
        assert on_gpu.device.type == "cuda"
        moved = dataclasses.replace(
            batch,
            **{
                f.name: getattr(batch, f.name).cpu()
                for f in dataclasses.fields(batch)
                if isinstance(getattr(batch, f.name), torch.Tensor)
            },
        )
        torch.testing.assert_close(on_gpu.cpu(), bayes_losses(cpu, task, moved))
    assert bayes_risk(gpu, "nwp", 2000, 1000, gen) == pytest.approx(1.154, rel=0.05)
