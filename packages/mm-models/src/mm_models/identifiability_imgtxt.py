"""Encoders of the image/text identifiability experiment (Daunhawer et al., ICLR 2023, 5.2).

Images: a ResNet-18 trained from scratch with a 100-way head, then LeakyReLU and a linear
map to `encoding_size`. Captions (one-hot tokens [B, L, V]): a linear word embedding to 128
dims, read as a 1-channel [L, 128] image by three stride-2 convolutions (kernel 4, padding 1,
25/50/100 channels, each with BatchNorm and ReLU), flattened and mapped linearly to
`encoding_size`. The backbone is built from its timm config only; nothing is downloaded.

    image_encoder, text_encoder = imgtxt_encoders(vocab_size=40, sequence_length=24)
    h_image = image_encoder(images)                    # [B, 3, H, W] -> [B, 4]
    h_text = text_encoder(one_hot_tokens)              # float [B, 24, 40] -> [B, 4]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ConvTextEncoder", "ResNetImageEncoder", "imgtxt_encoders"]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class ResNetImageEncoder(nn.Module):
    """h = W LeakyReLU(resnet(x)), a timm backbone with a `backbone_features`-way head."""

    def __init__(
        self,
        encoding_size: int = 4,
        backbone: str = "resnet18",
        backbone_features: int = 100,
        in_chans: int = 3,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        _check_positive(
            encoding_size=encoding_size, backbone_features=backbone_features, in_chans=in_chans
        )
        self.encoding_size = encoding_size
        self.in_chans = in_chans
        import timm  # here, not at module level: importing timm takes ~25 s on a cold CPU

        # zero_init_last=False: timm zero-initialises the last BatchNorm of every residual
        # block by default; torchvision's ResNet-18 (the original's) does not.
        self.backbone = timm.create_model(
            backbone,
            pretrained=False,
            num_classes=backbone_features,
            in_chans=in_chans,
            zero_init_last=False,
        )
        self.head = nn.Sequential(
            nn.LeakyReLU(negative_slope), nn.Linear(backbone_features, encoding_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"ResNetImageEncoder expects images of shape [batch, {self.in_chans}, H, W], "
                f"got {tuple(x.shape)}"
            )
        return self.head(self.backbone(x))


class ConvTextEncoder(nn.Module):
    """h = W flatten(conv3(conv2(conv1(E x)))) over one-hot tokens x of shape [B, L, V]."""

    def __init__(
        self,
        vocab_size: int,
        sequence_length: int,
        encoding_size: int = 4,
        embedding_dim: int = 128,
        channels: Sequence[int] = (25, 50, 100),
    ) -> None:
        super().__init__()
        _check_positive(
            vocab_size=vocab_size,
            sequence_length=sequence_length,
            encoding_size=encoding_size,
            embedding_dim=embedding_dim,
        )
        for c in channels:
            _check_positive(channels=c)
        # Each conv (k4, s2, p1) halves a side, rounding down: both sides must survive.
        shrink = 2 ** len(channels)
        if sequence_length < shrink or embedding_dim < shrink:
            raise ValueError(
                f"sequence_length and embedding_dim must be at least {shrink} for "
                f"{len(channels)} stride-2 convolutions, got {sequence_length} and {embedding_dim}"
            )
        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self.encoding_size = encoding_size
        self.embedding = nn.Linear(vocab_size, embedding_dim)
        layers: list[nn.Module] = []
        height, width, in_channels = sequence_length, embedding_dim, 1
        for out_channels in channels:
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            ]
            height, width, in_channels = height // 2, width // 2, out_channels
        self.convnet = nn.Sequential(*layers)
        self.flat_features = in_channels * height * width
        self.linear = nn.Linear(self.flat_features, encoding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.sequence_length, self.vocab_size)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected or not x.is_floating_point():
            raise ValueError(
                f"ConvTextEncoder expects float one-hot tokens of shape [batch, "
                f"{self.sequence_length}, {self.vocab_size}] (batch, sequence_length, "
                f"vocab_size), got {tuple(x.shape)} of {x.dtype}"
            )
        h = self.convnet(self.embedding(x).unsqueeze(1))
        return self.linear(h.flatten(1))


def imgtxt_encoders(
    vocab_size: int, sequence_length: int, encoding_size: int = 4
) -> tuple[ResNetImageEncoder, ConvTextEncoder]:
    """The paper's image and text encoders for one encoding size."""
    return (
        ResNetImageEncoder(encoding_size=encoding_size),
        ConvTextEncoder(vocab_size, sequence_length, encoding_size=encoding_size),
    )
