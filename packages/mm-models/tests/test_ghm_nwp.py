"""GHM next-word model: prefix/causal mask, information flow, shapes."""

import pytest
import torch

from mm_models.ghm import GHMNextWordConfig, GHMNextWordModel, prefix_lm_mask

TINY = {"vocab": 4, "n_leaves": 9, "d_model": 16, "n_layer": 2, "embed_dim": 3}


def leaves(batch=3, seed=0):
    return torch.randint(0, 4, (batch, 9), generator=torch.Generator().manual_seed(seed))


def expected_mask(n_prefix, n_text):
    n = n_prefix + n_text
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            if i < n_prefix:
                mask[i, j] = j < n_prefix  # image sees image only
            else:
                mask[i, j] = j < n_prefix or j <= i  # text sees all image, text causally
    return mask


@pytest.mark.parametrize(("mode", "n_prefix"), [("joint", 9), ("sequential", 1)])
def test_mask_is_prefix_causal(mode, n_prefix):
    assert torch.equal(prefix_lm_mask(n_prefix, 8), expected_mask(n_prefix, 8))
    model = GHMNextWordModel(GHMNextWordConfig(**TINY, image_mode=mode))
    assert torch.equal(model.attn_mask, expected_mask(n_prefix, 8))


@pytest.mark.parametrize("attention", ["softmax", "relu"])
def test_logits_depend_on_past_text_and_all_image_only(attention):
    torch.manual_seed(0)
    model = GHMNextWordModel(GHMNextWordConfig(**TINY, attention=attention)).double()
    text, image = leaves(batch=1, seed=1), leaves(batch=1, seed=2)
    # one batch: row 0 the original, rows 1+j change text j+1.. (j = 0..7), rows 9+t change image t
    texts, images = text.repeat(18, 1), image.repeat(18, 1)
    for j in range(8):
        texts[1 + j, j + 1 :] = (texts[1 + j, j + 1 :] + 1) % 4
    for t in range(9):
        images[9 + t, t] = (images[9 + t, t] + 1) % 4
    logits = model(texts, images)
    assert logits.shape == (18, 8, 4)
    base = logits[0]
    for j in range(8):
        other = logits[1 + j]
        torch.testing.assert_close(other[: j + 1], base[: j + 1])  # positions <= j unchanged
        if j + 1 < 8:
            assert not torch.allclose(other[j + 1], base[j + 1])  # position j+1 sees text j+1
    for t in range(9):  # every image token reaches every text position
        diff = (logits[9 + t] - base).abs().amax(dim=-1)
        assert (diff > 1e-9).all(), (t, diff)


def test_image_tokens_ignore_text():
    torch.manual_seed(0)
    model = GHMNextWordModel(GHMNextWordConfig(**TINY)).double()
    text, image = leaves(seed=1), leaves(seed=2)
    _, hidden = model(text, image, return_hidden=True)
    _, hidden2 = model((text + 1) % 4, image, return_hidden=True)
    for h, h2 in zip(hidden, hidden2):
        torch.testing.assert_close(h[:, model.image_slice], h2[:, model.image_slice])
        assert not torch.allclose(h[:, model.text_slice], h2[:, model.text_slice])


def test_text_input_lengths_and_sequential_prefix():
    model = GHMNextWordModel(GHMNextWordConfig(**TINY))
    text, image = leaves(seed=1), leaves(seed=2)
    torch.testing.assert_close(model(text, image), model(text[:, :8], image))  # last leaf unused
    seq = GHMNextWordModel(GHMNextWordConfig(**TINY, image_mode="sequential"))
    emb = torch.randn(3, 3)
    x = seq.input_tokens(text, image_embedding=emb)
    assert x.shape == (3, 9, 16)
    padded = torch.cat([emb, torch.zeros(3, 13)], dim=1)
    torch.testing.assert_close(x[:, 0], padded + seq.pos_emb[0])
    torch.testing.assert_close(x[:, 1:], seq.text_tok_emb(text[:, :8]) + seq.pos_emb[1:])
    logits = seq(text, image_embedding=emb)
    assert logits.shape == (3, 8, 4)
    assert (seq(text, image_embedding=emb + 1) - logits).abs().amax(dim=(0, 2)).gt(0).all()


def test_nwp_bad_input():
    model = GHMNextWordModel(GHMNextWordConfig(**TINY))
    text, image = leaves(), leaves()
    with pytest.raises(ValueError, match="number of leaves"):
        model(text[:, :7], image)
    with pytest.raises(ValueError, match="number of leaves"):
        model(text, image[:, :8])
    with pytest.raises(ValueError, match="out of range"):
        model(text, image + 4)
    with pytest.raises(ValueError, match="batch size"):
        model(text, image[:2])
    with pytest.raises(ValueError, match="joint"):
        model(text, image_embedding=torch.randn(3, 3))
    with pytest.raises(ValueError, match="n_head"):
        GHMNextWordModel(GHMNextWordConfig(**TINY, n_head=3))
    with pytest.raises(ValueError, match="embed_dim"):
        GHMNextWordModel(GHMNextWordConfig(**{**TINY, "embed_dim": 17}, image_mode="sequential"))
