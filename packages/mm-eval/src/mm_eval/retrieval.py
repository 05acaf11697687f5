"""Image-text retrieval and zero-shot classification metrics.

Scores are dot products; callers pass L2-normalised features, so they are cosine
similarities. Similarities are computed in blocks of at most `block_size` query rows x all
candidates (`_similarity_blocks`), on the features' device, never as one full matrix.

Rank of a query = the number of candidates with a strictly higher score than its ground
truth (0-based); ties count in the query's favour. Reported mean/median ranks are 1-based.

    metrics = retrieval_metrics(image_features, text_features, text_to_image)
    classifier = zero_shot_classifier(encode_text, class_names, ["a photo of a {}."])
    accuracy = zero_shot_accuracy(image_features, classifier, labels, topk=(1, 5))
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["retrieval_metrics", "zero_shot_accuracy", "zero_shot_classifier"]

RECALL_KS = (1, 5, 10)


def _check_features(x: object, name: str) -> torch.Tensor:
    """A non-empty, finite, 2-D floating-point tensor, or ValueError naming `name`."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return x


def _check_pair(
    a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same feature dim and device; both cast to their common dtype."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feature dims differ: {names[0]} has d={a.shape[1]}, {names[1]} has d={b.shape[1]}"
        )
    if a.device != b.device:
        raise ValueError(f"{names[0]} is on {a.device} but {names[1]} is on {b.device}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def _check_index(idx: object, name: str, n: int, bound: int, device: torch.device) -> torch.Tensor:
    """An int64 tensor [n] with values in [0, bound) on `device`; int32 etc. are cast."""
    idx = torch.as_tensor(idx)
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {idx.dtype}")
    if idx.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(idx.shape)}")
    idx = idx.to(device=device, dtype=torch.int64)
    bad = (idx < 0) | (idx >= bound)
    if bool(bad.any()):
        first = int(idx[bad][0])
        raise ValueError(f"{name} has {int(bad.sum())} value(s) outside [0, {bound}), e.g. {first}")
    return idx


def _check_block_size(block_size: object, name: str = "block_size") -> int:
    """A positive int."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"{name} must be an int >= 1, got {block_size!r}")
    return block_size


def _similarity_blocks(
    queries: torch.Tensor, candidates: torch.Tensor, block_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start, queries[start:start + block_size] @ candidates.T), one block at a time.

    Keeps no reference to a yielded block: callers `del` it before asking for the next one.
    """
    for start in range(0, queries.shape[0], block_size):
        yield start, queries[start : start + block_size] @ candidates.T


def _retrieval_ranks(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks (image->text [I], text->image [T]) of validated inputs."""
    n_images = image_features.shape[0]
    device = image_features.device
    # Captions grouped by image: those of images [s, e) are order[offsets[s]:offsets[e]].
    order = torch.argsort(text_to_image, stable=True)
    owner = text_to_image[order]
    offsets = [0, *torch.bincount(text_to_image, minlength=n_images).cumsum(0).tolist()]

    txt_ranks = torch.empty(n_images, dtype=torch.int64, device=device)
    for s, sims in _similarity_blocks(image_features, text_features, block_size):
        e = s + sims.shape[0]
        lo, hi = offsets[s], offsets[e]
        rows = owner[lo:hi] - s
        best = torch.full((e - s,), -torch.inf, dtype=sims.dtype, device=device)
        best.scatter_reduce_(0, rows, sims[rows, order[lo:hi]], reduce="amax")
        txt_ranks[s:e] = (sims > best[:, None]).sum(1)
        del sims  # freed before the next block is computed

    img_ranks = torch.empty(text_features.shape[0], dtype=torch.int64, device=device)
    for s, sims in _similarity_blocks(text_features, image_features, block_size):
        e = s + sims.shape[0]
        target = sims.gather(1, text_to_image[s:e, None])
        img_ranks[s:e] = (sims > target).sum(1)
        del sims
    return txt_ranks, img_ranks


def _recall(ranks: torch.Tensor, k: int) -> float:
    """Percent of queries whose ground truth is within the top k (0-based rank < k)."""
    return 100.0 * float((ranks < k).double().mean())


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    *,
    block_size: int = 1024,
) -> dict[str, float]:
    """Image->text (`txt_*`) and text->image (`img_*`) recall@{1,5,10} in percent and ranks.

    image_features [I, d], text_features [T, d]; text_to_image [T] is the image of each
    caption, and every image needs at least one caption. Image->text rank of an image is
    the rank of its best-ranked caption among all T texts; text->image rank of a caption is
    the rank of its image among all I images. Rank = number of candidates with a strictly
    higher score (ties count in the query's favour). Keys: txt_r1, txt_r5, txt_r10, img_r1,
    img_r5, img_r10, r_mean (mean of the six), rsum (their sum), txt_mean_rank,
    txt_median_rank, img_mean_rank, img_median_rank (1-based; the median of an even count
    is the mean of the two middle ranks). At most `block_size` query rows x all candidates
    of the similarity matrix exist at a time.
    """
    image_features = _check_features(image_features, "image_features")
    text_features = _check_features(text_features, "text_features")
    image_features, text_features = _check_pair(
        image_features, text_features, ("image_features", "text_features")
    )
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    text_to_image = _check_index(
        text_to_image, "text_to_image", n_texts, n_images, image_features.device
    )
    block_size = _check_block_size(block_size)
    n_without = int((torch.bincount(text_to_image, minlength=n_images) == 0).sum())
    if n_without:
        raise ValueError(
            f"{n_without} of {n_images} images have no caption in text_to_image; "
            "every image needs at least one"
        )

    with torch.no_grad():
        txt_ranks, img_ranks = _retrieval_ranks(
            image_features, text_features, text_to_image, block_size
        )
    out = {f"txt_r{k}": _recall(txt_ranks, k) for k in RECALL_KS}
    out |= {f"img_r{k}": _recall(img_ranks, k) for k in RECALL_KS}
    recalls = list(out.values())
    out["r_mean"] = sum(recalls) / len(recalls)
    out["rsum"] = sum(recalls)
    for side, ranks in (("txt", txt_ranks), ("img", img_ranks)):
        one_based = ranks.cpu().numpy() + 1
        out[f"{side}_mean_rank"] = float(one_based.mean())
        out[f"{side}_median_rank"] = float(np.median(one_based))
    return out


def _check_template(template: object, i: int) -> str:
    """A str with exactly one `{}` replacement field (`{{`/`}}` are literal braces)."""
    if not isinstance(template, str):
        raise ValueError(f"templates[{i}] must be a str, got {type(template).__name__}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f"templates[{i}] {template!r} is not a valid format string") from err
    if fields != [""]:
        raise ValueError(
            f"templates[{i}] {template!r} must contain exactly one '{{}}' placeholder "
            f"(found {len(fields)} replacement fields)"
        )
    return template


def zero_shot_classifier(
    encode_text: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Class embeddings [C, d]: mean of L2-normalised template embeddings, L2-normalised.

    Every template is filled with every class name (`template.format(name)`), the C x M
    prompts are passed to `encode_text(list[str]) -> [n, d]` in chunks of at most
    `batch_size`, under torch.no_grad(). The result has the encoder's device and dtype.
    """
    for name, seq in (("class_names", class_names), ("templates", templates)):
        if isinstance(seq, str):
            raise ValueError(f"{name} must be a sequence of str, not a single str")
        if len(seq) == 0:
            raise ValueError(f"{name} is empty")
    for i, c in enumerate(class_names):
        if not isinstance(c, str):
            raise ValueError(f"class_names[{i}] must be a str, got {type(c).__name__}")
    templates = [_check_template(t, i) for i, t in enumerate(templates)]
    batch_size = _check_block_size(batch_size, "batch_size")

    prompts = [t.format(c) for c in class_names for t in templates]
    n_templates = len(templates)
    sums: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            emb = encode_text(batch)
            if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != len(batch):
                shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
                raise ValueError(
                    f"encode_text must return a [{len(batch)}, d] tensor for {len(batch)} "
                    f"prompts, got {shape}"
                )
            if not emb.is_floating_point() or not bool(torch.isfinite(emb).all()):
                raise ValueError("encode_text returned a non-float or non-finite tensor")
            if sums is None:
                out_dtype = emb.dtype
                acc_dtype = torch.promote_types(emb.dtype, torch.float32)
                sums = emb.new_zeros((len(class_names), emb.shape[1]), dtype=acc_dtype)
            elif emb.shape[1] != sums.shape[1] or emb.device != sums.device:
                raise ValueError(
                    f"encode_text returned d={emb.shape[1]} on {emb.device}, earlier batches "
                    f"d={sums.shape[1]} on {sums.device}"
                )
            cls = torch.arange(start, start + len(batch), device=emb.device) // n_templates
            sums.index_add_(0, cls, F.normalize(emb.to(sums.dtype), dim=1))
    assert sums is not None
    return F.normalize(sums / n_templates, dim=1).to(out_dtype)


def zero_shot_accuracy(
    image_features: torch.Tensor,
    classifier: torch.Tensor,
    labels: torch.Tensor,
    *,
    topk: Sequence[int] = (1, 5),
    block_size: int = 4096,
) -> dict[str, float]:
    """Top-k accuracy in percent of logits = image_features @ classifier.T, keys f"top{k}".

    image_features [N, d], classifier [C, d] (e.g. from zero_shot_classifier), labels [N]
    in [0, C). An image counts as correct at k if fewer than k classes score strictly
    higher than its label (ties count in its favour, as in retrieval_metrics); k larger
    than C is clipped to C (so it scores 100). Logits are computed `block_size` images at
    a time.
    """
    image_features = _check_features(image_features, "image_features")
    classifier = _check_features(classifier, "classifier")
    image_features, classifier = _check_pair(
        image_features, classifier, ("image_features", "classifier")
    )
    n_images, n_classes = image_features.shape[0], classifier.shape[0]
    labels = _check_index(labels, "labels", n_images, n_classes, image_features.device)
    block_size = _check_block_size(block_size)
    if isinstance(topk, int) or len(topk) == 0:
        raise ValueError(f"topk must be a non-empty sequence of ints, got {topk!r}")
    for k in topk:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"topk values must be ints >= 1, got {k!r}")

    ranks = torch.empty(n_images, dtype=torch.int64, device=image_features.device)
    with torch.no_grad():
        for s, logits in _similarity_blocks(image_features, classifier, block_size):
            e = s + logits.shape[0]
            ranks[s:e] = (logits > logits.gather(1, labels[s:e, None])).sum(1)
            del logits
    return {f"top{k}": _recall(ranks, min(k, n_classes)) for k in topk}
