"""ghm_clip against a slow reference written from the paper's formula (loops)."""

from __future__ import annotations

import pytest
import torch
from _loss_cases import assert_close

import mm_losses

B, D = 3, 4


def _layout(num_negatives: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rows = B * (num_negatives + 1)
    image = 0.5 * torch.randn(rows, D, generator=g, dtype=torch.float64)
    text = 0.5 * torch.randn(rows, D, generator=g, dtype=torch.float64)
    text[: 2 * B] += image[: 2 * B]  # blocks 0 and 1 are matched pairs
    return image.requires_grad_(), text.requires_grad_()


def ghm_reference(image, text, num_negatives):
    """Sum of the two directions of mean_i -log(S+ / (S+ + sum_k S-_k)), S = exp(<f_t, f_i>)."""

    def s(i_row, t_row):
        return torch.exp(sum(image[i_row, k] * text[t_row, k] for k in range(D)))

    direction_1 = direction_2 = 0.0
    for i in range(B):
        independent = [2 * B + k * B + i for k in range(num_negatives - 1)]
        positive = s(i, i)  # image i of block 0 with its text
        negatives = sum(s(i, j) for j in independent)
        direction_1 = direction_1 - torch.log(positive / (positive + negatives))
        positive = s(B + i, B + i)  # text B + i of block 1 with its image
        negatives = sum(s(j, B + i) for j in independent)
        direction_2 = direction_2 - torch.log(positive / (positive + negatives))
    return direction_1 / B + direction_2 / B


@pytest.mark.parametrize("num_negatives", [2, 4, 6])
def test_ghm_clip_matches_reference(num_negatives):
    image, text = _layout(num_negatives)
    loss = mm_losses.build("ghm_clip", num_negatives=num_negatives)
    assert loss.batch_multiple == num_negatives + 1
    got = loss(image, text)
    want = ghm_reference(image, text, num_negatives)
    assert_close(got, want, what="value")
    grads = torch.autograd.grad(got, (image, text))
    for g, w in zip(grads, torch.autograd.grad(want, (image, text))):
        assert_close(g, w, what="gradient")


def test_ghm_clip_pairs_layout():
    image_1, text_1, image_2, text_2 = mm_losses.ghm_clip_pairs(2, 4)
    assert image_1.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]
    assert text_1.tolist() == [[0, 4, 6, 8], [1, 5, 7, 9]]
    assert image_2.tolist() == [[2, 4, 6, 8], [3, 5, 7, 9]]
    assert text_2.tolist() == [[2, 2, 2, 2], [3, 3, 3, 3]]


def test_ghm_clip_from_logits_is_the_loss_on_precomputed_logits():
    g = torch.Generator().manual_seed(1)
    logits_1 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    logits_2 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    want = 0.0
    for logits in (logits_1, logits_2):
        for row in logits:
            want += -torch.log(torch.exp(row[0]) / torch.exp(row).sum()) / 5
    assert_close(mm_losses.ghm_clip_from_logits(logits_1, logits_2), want)


def test_ghm_clip_rejects_a_batch_that_is_not_b_times_k_plus_one():
    image, text = _layout(4)
    with pytest.raises(ValueError, match=r"B\(K\+1\)"):
        mm_losses.build("ghm_clip")(image[:-1], text[:-1])
    with pytest.raises(ValueError, match="at least 2"):
        mm_losses.build("ghm_clip", num_negatives=1)
