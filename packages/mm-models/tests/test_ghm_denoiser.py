"""GHM conditional denoiser: evidence channels, joint and sequential text."""

import pytest
import torch

from mm_models.ghm import GHMConditionalDenoiser, GHMDenoiserConfig, evidence_features

TINY = {"vocab": 4, "n_leaves": 9, "d_model": 16, "n_layer": 2, "embed_dim": 3}


def leaves(batch=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, (batch, 9), generator=gen)
    return x, x.float() + torch.randn(batch, 9, generator=gen)


def test_evidence_features_loop():
    _, z = leaves()
    ev = evidence_features(z, vocab=4, d_model=7, sigma=1.0)
    assert ev.shape == (5, 9, 7)
    for b in range(5):
        for t in range(9):
            for c in range(7):
                expected = -((c - z[b, t].item()) ** 2) / 2 if c < 4 else 0.0
                assert ev[b, t, c].item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    ev2 = evidence_features(z, vocab=4, d_model=4, sigma=2.0)
    torch.testing.assert_close(ev2, ev[..., :4] / 4)


def test_joint_denoiser_inputs_and_shapes():
    model = GHMConditionalDenoiser(GHMDenoiserConfig(**TINY, text_mode="joint"))
    text, _ = leaves(seed=1)
    _, z = leaves(seed=2)
    x = model.input_tokens(z, text)
    assert x.shape == (5, 18, 16)
    assert model.text_slice == slice(0, 9) and model.image_slice == slice(9, 18)
    torch.testing.assert_close(x[:, :9], model.text_tok_emb(text) + model.text_pos_emb)
    torch.testing.assert_close(x[:, 9:], evidence_features(z, 4, 16) + model.image_pos_emb)
    out, hidden = model(z, text, return_hidden=True)
    assert out.shape == (5, 9) and len(hidden) == 2 and hidden[0].shape == (5, 18, 16)
    text2 = (text + 1) % 4
    assert not torch.allclose(model(z, text2), out)  # the text conditions the output


def test_sequential_denoiser_uses_padded_embedding():
    model = GHMConditionalDenoiser(GHMDenoiserConfig(**TINY, text_mode="sequential"))
    _, z = leaves()
    emb = torch.randn(5, 3)
    x = model.input_tokens(z, text_embedding=emb)
    assert x.shape == (5, 10, 16)
    expected_text = torch.zeros(5, 16)
    expected_text[:, :3] = emb
    torch.testing.assert_close(x[:, 0], expected_text + model.text_pos_emb[0])
    torch.testing.assert_close(x[:, 1:], evidence_features(z, 4, 16) + model.image_pos_emb)
    out = model(z, text_embedding=emb)
    assert out.shape == (5, 9)
    assert not torch.allclose(model(z, text_embedding=emb + 1.0), out)
    assert model.image_slice == slice(1, 10)


def test_denoiser_bad_input():
    with pytest.raises(ValueError, match="evidence channels"):
        GHMDenoiserConfig(vocab=10, d_model=8, n_layer=1).validate()
    with pytest.raises(ValueError, match="evidence channels"):
        GHMConditionalDenoiser(GHMDenoiserConfig(vocab=10, n_leaves=9, d_model=8, n_layer=1))
    with pytest.raises(ValueError, match="n_head"):
        GHMConditionalDenoiser(GHMDenoiserConfig(**TINY, n_head=5))
    joint = GHMConditionalDenoiser(GHMDenoiserConfig(**TINY))
    text, z = leaves()
    with pytest.raises(ValueError, match="number of leaves"):
        joint(z[:, :8], text)
    with pytest.raises(ValueError, match="out of range"):
        joint(z, text + 4)
    with pytest.raises(ValueError, match="floating"):
        joint(text, text)
    with pytest.raises(ValueError, match="joint"):
        joint(z, text_embedding=torch.randn(5, 3))
    seq = GHMConditionalDenoiser(GHMDenoiserConfig(**TINY, text_mode="sequential"))
    with pytest.raises(ValueError, match="sequential"):
        seq(z, text)
    with pytest.raises(ValueError, match="embed_dim"):
        seq(z, text_embedding=torch.randn(5, 4))
