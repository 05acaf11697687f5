"""GHM CLIP encoder and model."""

import pytest
import torch
import torch.nn.functional as F

from mm_models.ghm import GHMClipConfig, GHMClipEncoder, GHMClipModel

TINY = {"vocab": 4, "n_leaves": 9, "embed_dim": 3, "d_model": 16, "n_layer": 2}


def tokens(batch=5, n=9, vocab=4, seed=0):
    return torch.randint(0, vocab, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attention", ["softmax", "relu"])
def test_encoder_shapes_and_hidden(attention):
    enc = GHMClipEncoder(GHMClipConfig(**TINY, attention=attention))
    f, hidden = enc(tokens(), return_hidden=True)
    assert f.shape == (5, 3)
    assert len(hidden) == 2 and all(h.shape == (5, 9, 16) for h in hidden)
    torch.testing.assert_close(enc(tokens()), f)


def test_readout_is_per_token_then_linear_over_positions():
    torch.manual_seed(0)
    enc = GHMClipEncoder(GHMClipConfig(**TINY))
    torch.nn.init.normal_(enc.position_head.weight)
    torch.nn.init.normal_(enc.position_head.bias)
    x = tokens()
    h = enc.transformer(enc.tok_emb(x) + enc.pos_emb)
    per_token = h @ enc.token_head.weight.T + enc.token_head.bias  # [B, L, E]
    w, b = enc.position_head.weight[0], enc.position_head.bias[0]  # [L], scalar
    expected = torch.stack(
        [sum(w[t] * per_token[:, t, e] for t in range(9)) + b for e in range(3)], dim=1
    )
    torch.testing.assert_close(enc(x), expected)


def test_clip_model_has_separate_encoders():
    model = GHMClipModel(GHMClipConfig(**TINY))
    text, image = tokens(seed=1), tokens(seed=2)
    f_text, f_image = model(text, image)
    assert f_text.shape == f_image.shape == (5, 3)
    torch.testing.assert_close(f_text, model.text_encoder(text))
    torch.testing.assert_close(f_image, model.image_encoder(image))
    text_params = {id(p) for p in model.text_encoder.parameters()}
    assert not text_params & {id(p) for p in model.image_encoder.parameters()}
    out = model(text, image, return_hidden=True)
    assert len(out) == 4 and len(out[2]) == len(out[3]) == 2


def test_tiny_clip_model_fits_a_small_batch(one_torch_thread):
    """In-batch contrastive loss with similarity exp(<f_t, f_i>) drops on a fixed batch."""
    torch.manual_seed(0)
    model = GHMClipModel(GHMClipConfig(vocab=4, n_leaves=9, embed_dim=8, d_model=16, n_layer=1))
    text, image = tokens(batch=8, seed=3), tokens(batch=8, seed=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    labels = torch.arange(8)
    losses = []
    for _ in range(40):
        f_text, f_image = model(text, image)
        logits = f_image @ f_text.T
        loss = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses[::5]


def test_bad_tokens_raise():
    enc = GHMClipEncoder(GHMClipConfig(**TINY))
    with pytest.raises(ValueError, match="out of range"):
        enc(tokens().clamp(max=3) + 1)
    with pytest.raises(ValueError, match="out of range"):
        enc(tokens() - 1)
    with pytest.raises(ValueError, match="number of leaves"):
        enc(tokens(n=8))
    with pytest.raises(ValueError, match="integer"):
        enc(tokens().float())
    with pytest.raises(ValueError, match="n_head"):
        GHMClipEncoder(GHMClipConfig(**TINY, n_head=3))
    model = GHMClipModel(GHMClipConfig(**TINY))
    with pytest.raises(ValueError, match="batch size"):
        model(tokens(batch=5), tokens(batch=4))


@pytest.mark.parametrize("embed_std", [0.02, 1.0])
def test_embeddings_start_at_embed_std_and_linears_at_nanogpt_scale(embed_std):
    """Token and position embeddings are drawn with std embed_std; the Linear weights keep
    nanoGPT's 0.02 whatever embed_std is."""
    torch.manual_seed(0)
    cfg = GHMClipConfig(vocab=50, n_leaves=40, embed_dim=3, d_model=64, n_layer=2)
    cfg.embed_std = embed_std
    enc = GHMClipEncoder(cfg)
    for tensor in (enc.tok_emb.weight, enc.pos_emb):
        assert abs(tensor.std().item() - embed_std) < 0.1 * embed_std
        assert abs(tensor.mean().item()) < 0.1 * embed_std
    fc = enc.transformer.blocks[0].mlp.fc.weight
    assert abs(fc.std().item() - 0.02) < 0.002


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_non_positive_embed_std_is_rejected(bad):
    with pytest.raises(ValueError, match="embed_std must be > 0"):
        GHMClipEncoder(GHMClipConfig(**TINY, embed_std=bad))
