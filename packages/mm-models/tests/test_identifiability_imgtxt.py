"""Tests for the image/text identifiability encoders."""

from __future__ import annotations

import pytest
import torch

from mm_models.identifiability_imgtxt import ConvTextEncoder, ResNetImageEncoder, imgtxt_encoders

VOCAB, LENGTH = 30, 24


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _one_hot(batch: int, length: int = LENGTH, vocab: int = VOCAB) -> torch.Tensor:
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.one_hot(ids, vocab).float()


def _all_grads_flow(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.fixture(scope="module")
def encoders():
    torch.manual_seed(0)
    return imgtxt_encoders(VOCAB, LENGTH, encoding_size=4)


def test_image_encoder_shape_and_gradients(encoders):
    model = encoders[0]
    assert isinstance(model, ResNetImageEncoder)
    assert model.backbone.num_classes == 100 and model.head[1].in_features == 100
    out = model(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 4)
    out.square().sum().backward()
    _all_grads_flow(model)


def test_residual_blocks_start_like_torchvision(encoders):
    """Every BatchNorm starts at weight 1 (torchvision's init); timm's default would start
    the last one of each residual block at 0."""
    bns = [m for m in encoders[0].backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 20  # stem + 8 blocks x 2 + 3 downsample
    for bn in bns:
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))


def test_image_encoder_rejects_wrong_channels(encoders):
    with pytest.raises(ValueError, match=r"\[batch, 3, H, W\]"):
        encoders[0](torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\[batch, 3, H, W\]"):
        encoders[0](torch.rand(3, 16, 16))


@pytest.mark.parametrize(("length", "flat"), [(24, 100 * 3 * 16), (31, 100 * 3 * 16), (8, 1600)])
def test_text_encoder_shape_and_gradients(length, flat):
    torch.manual_seed(0)
    model = ConvTextEncoder(VOCAB, length, encoding_size=5)
    assert model.flat_features == flat
    out = model(_one_hot(3, length))
    assert out.shape == (3, 5)
    out.square().sum().backward()
    _all_grads_flow(model)


def test_text_encoder_rejects_wrong_shapes():
    model = ConvTextEncoder(VOCAB, LENGTH)
    expected = rf"\[batch, {LENGTH}, {VOCAB}\]"
    with pytest.raises(ValueError, match=expected):
        model(_one_hot(2, LENGTH, VOCAB + 1))  # wrong vocabulary size
    with pytest.raises(ValueError, match=expected):
        model(_one_hot(2, LENGTH + 1))  # wrong sequence length
    with pytest.raises(ValueError, match=expected):
        model(_one_hot(2)[0])  # no batch dimension
    with pytest.raises(ValueError, match=expected):
        model(torch.zeros(2, LENGTH, VOCAB, dtype=torch.int64))  # ids, not one-hot floats
    with pytest.raises(ValueError, match="at least 8"):
        ConvTextEncoder(VOCAB, 7)
    with pytest.raises(ValueError, match="vocab_size"):
        ConvTextEncoder(0, LENGTH)


def test_encoder_pair_agrees_on_encoding_size(encoders):
    image_encoder, text_encoder = encoders
    assert isinstance(text_encoder, ConvTextEncoder)
    assert image_encoder.encoding_size == text_encoder.encoding_size == 4
    assert (text_encoder.vocab_size, text_encoder.sequence_length) == (VOCAB, LENGTH)
