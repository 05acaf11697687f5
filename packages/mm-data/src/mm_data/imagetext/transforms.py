"""Image transforms for CLIP training, retrieval evaluation and zero-shot classification.

Every random choice is drawn from torch's global generator (torchvision's random transforms
call ``torch.rand`` / ``torch.randint``), so seeding ``torch`` (and ``random``, for callers
that mix in Python-level randomness) per sample reproduces an augmented tensor exactly.
"""

from __future__ import annotations

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "eval_transform",
    "train_transform",
    "zeroshot_transform",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_size(size: int) -> None:
    """Reject a non-positive or non-integer image size."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")


def train_transform(size: int = 256, *, randaugment: bool = True) -> T.Compose:
    """RandomResizedCrop(0.5-1, bicubic), flip, RandAugment(2, 7), ToTensor, CLIP Normalize.

    torchvision's ``RandAugment(num_ops=2, magnitude=7, num_magnitude_bins=11)`` stands in
    for ALBEF's ``RandomAugment(2, 7)``: two random ops per image at magnitude 7 of 10 (with 11
    bins the 0-10 scale of ALBEF: rotation up to 21 degrees, shear up to 0.21), over
    torchvision's op list (which adds Posterize, Solarize, Color and Contrast to ALBEF's).
    """
    _check_size(size)
    steps: list[object] = [
        T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
    ]
    if randaugment:
        steps.append(T.RandAugment(num_ops=2, magnitude=7, num_magnitude_bins=11))
    steps += [T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)]
    return T.Compose(steps)


def eval_transform(size: int = 256) -> T.Compose:
    """Resize to (size, size) bicubic, ToTensor, CLIP Normalize."""
    _check_size(size)
    return T.Compose(
        [
            T.Resize((size, size), interpolation=InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def zeroshot_transform(size: int = 256) -> T.Compose:
    """Resize the short side to size (bicubic), CenterCrop(size), ToTensor, ImageNet Normalize."""
    _check_size(size)
    return T.Compose(
        [
            T.Resize(size, interpolation=InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
