"""Retrieval and zero-shot metrics against slow, loop-based references."""

from __future__ import annotations

import math
import statistics
import weakref
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import mm_eval
from mm_eval import retrieval
from mm_eval.retrieval import (
    _retrieval_ranks,
    retrieval_metrics,
    zero_shot_accuracy,
    zero_shot_classifier,
)

KEYS = [
    "txt_r1",
    "txt_r5",
    "txt_r10",
    "img_r1",
    "img_r5",
    "img_r10",
    "r_mean",
    "rsum",
    "txt_mean_rank",
    "txt_median_rank",
    "img_mean_rank",
    "img_median_rank",
]


# ---------------------------------------------------------------- references (slow, plain loops


def _score(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(x) * float(y) for x, y in zip(a.tolist(), b.tolist()))


def reference_ranks(img, txt, t2i):
    """0-based ranks by counting strictly higher scores, one query at a time."""
    n_img, n_txt = img.shape[0], txt.shape[0]
    t2i = [int(i) for i in t2i]
    s = [[_score(img[i], txt[j]) for j in range(n_txt)] for i in range(n_img)]
    txt_ranks = []
    for i in range(n_img):
        best = max(s[i][j] for j in range(n_txt) if t2i[j] == i)
        txt_ranks.append(sum(1 for j in range(n_txt) if s[i][j] > best))
    img_ranks = []
    for j in range(n_txt):
        target = s[t2i[j]][j]
        img_ranks.append(sum(1 for i in range(n_img) if s[i][j] > target))
    return txt_ranks, img_ranks


def reference_metrics(img, txt, t2i):
    txt_ranks, img_ranks = reference_ranks(img, txt, t2i)
    out = {}
    for side, ranks in (("txt", txt_ranks), ("img", img_ranks)):
        for k in (1, 5, 10):
            out[f"{side}_r{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
    six = [out[f"{s}_r{k}"] for s in ("txt", "img") for k in (1, 5, 10)]
    out["r_mean"] = sum(six) / 6
    out["rsum"] = sum(six)
    for side, ranks in (("txt", txt_ranks), ("img", img_ranks)):
        out[f"{side}_mean_rank"] = sum(r + 1 for r in ranks) / len(ranks)
        out[f"{side}_median_rank"] = float(statistics.median(r + 1 for r in ranks))
    return out


def _assert_close_dicts(got, want):
    assert list(got) == KEYS
    for k in KEYS:
        assert isinstance(got[k], float), k
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-9), k


# ---------------------------------------------------------------- data


def _caption_counts(n_images, gen):
    """1 to 5 captions per image, with at least one image of 1 and one of 5."""
    counts = torch.randint(1, 6, (n_images,), generator=gen)
    counts[0], counts[-1] = 1, 5
    return counts


def make_random(n_images=13, d=6, seed=0, ties=False):
    """Captions near their image (so recalls are neither 0 nor 100), shuffled order.

    ties=True: small integer-valued features, so many dot products are exactly equal.
    """
    gen = torch.Generator().manual_seed(seed)
    counts = _caption_counts(n_images, gen)
    t2i = torch.repeat_interleave(torch.arange(n_images), counts)
    t2i = t2i[torch.randperm(len(t2i), generator=gen)]
    if ties:
        img = torch.randint(-1, 2, (n_images, d), generator=gen).float()
        txt = img[t2i] + torch.randint(-1, 2, (len(t2i), d), generator=gen).float()
    else:
        img = F.normalize(torch.randn(n_images, d, generator=gen), dim=1)
        txt = F.normalize(img[t2i] + 0.8 * torch.randn(len(t2i), d, generator=gen), dim=1)
    return img, txt, t2i


CASES = [
    {"seed": 0},
    {"seed": 1, "n_images": 25, "d": 8},
    {"seed": 2, "n_images": 4, "d": 3},
    {"seed": 3, "ties": True},
    {"seed": 4, "ties": True, "n_images": 30, "d": 4},
    {"seed": 5, "ties": True, "n_images": 7, "d": 2},
]


# ---------------------------------------------------------------- retrieval vs the reference


@pytest.mark.parametrize("case", CASES)
def test_ranks_match_reference(case):
    img, txt, t2i = make_random(**case)
    txt_ranks, img_ranks = _retrieval_ranks(img, txt, t2i, 4)
    want_txt, want_img = reference_ranks(img, txt, t2i)
    assert txt_ranks.tolist() == want_txt
    assert img_ranks.tolist() == want_img


@pytest.mark.parametrize("case", CASES)
def test_metrics_match_reference(case):
    img, txt, t2i = make_random(**case)
    got = retrieval_metrics(img, txt, t2i, block_size=5)
    want = reference_metrics(img, txt, t2i)
    _assert_close_dicts(got, want)
    # the data is neither trivially perfect nor hopeless
    assert 0 < got["txt_r1"] < 100 or 0 < got["img_r1"] < 100


def test_ties_are_present_and_count_in_query_favour():
    img, txt, t2i = make_random(seed=3, ties=True)
    sims = img @ txt.T
    target = sims[t2i, torch.arange(len(t2i))]
    n_tied = int((sims == target[None, :]).sum()) - len(t2i)
    assert n_tied > 10  # the engineered ties really occur
    # a caption tied with every image has rank 0
    img = torch.eye(3)
    txt = torch.ones(2, 3)
    m = retrieval_metrics(img, torch.cat([txt, torch.eye(3)[[2]]]), torch.tensor([0, 1, 2]))
    assert m["img_r1"] == 100.0
    assert m["img_mean_rank"] == 1.0


@pytest.mark.parametrize("case", CASES[:2] + CASES[3:5])
def test_every_block_size_gives_identical_results(case):
    img, txt, t2i = make_random(**case)
    n_txt = len(t2i)
    results = [
        retrieval_metrics(img, txt, t2i, block_size=b) for b in (1, 2, 3, n_txt, n_txt + 17, 1024)
    ]
    ranks = [_retrieval_ranks(img, txt, t2i, b) for b in (1, 2, 3, n_txt, n_txt + 17)]
    for r in results[1:]:
        assert r == results[0]
    for tr, ir in ranks[1:]:
        assert torch.equal(tr, ranks[0][0]) and torch.equal(ir, ranks[0][1])


# ---------------------------------------------------------------- hand-built cases


def test_perfect_match_one_caption_each():
    feats = F.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    m = retrieval_metrics(feats, feats.clone(), torch.arange(12), block_size=5)
    for k in KEYS:
        want = {"r_mean": 100.0, "rsum": 600.0}.get(k, 1.0 if "rank" in k else 100.0)
        assert m[k] == want, k


def test_perfect_match_several_captions():
    counts = torch.tensor([1, 5, 2, 3])
    t2i = torch.repeat_interleave(torch.arange(4), counts)
    img = torch.eye(4)
    m = retrieval_metrics(img, img[t2i], t2i, block_size=2)
    assert m["rsum"] == 600.0
    assert m["txt_mean_rank"] == m["img_mean_rank"] == 1.0


def test_known_permutation():
    # text j is image perm[j]'s one-hot, but labelled as image j: 3 fixed points out of 10.
    perm = torch.tensor([0, 2, 1, 3, 5, 6, 4, 7, 9, 8])
    fixed = [0, 3, 7]
    assert [j for j in range(10) if perm[j] == j] == fixed
    img = torch.eye(10)
    m = retrieval_metrics(img, img[perm], torch.arange(10), block_size=3)
    # non-fixed queries: ground truth scores 0, exactly one candidate scores 1 -> rank 1,
    # the other zeros tie with it and do not count against it
    assert m == {
        "txt_r1": 30.0,
        "txt_r5": 100.0,
        "txt_r10": 100.0,
        "img_r1": 30.0,
        "img_r5": 100.0,
        "img_r10": 100.0,
        "r_mean": pytest.approx(460.0 / 6),
        "rsum": 460.0,
        "txt_mean_rank": pytest.approx(1.7),
        "txt_median_rank": 2.0,
        "img_mean_rank": pytest.approx(1.7),
        "img_median_rank": 2.0,
    }


def test_known_graded_text_to_image_ranks():
    # 12 images (one-hot), caption j scores 0.5 on its image and 1.0 on j other images,
    # so its text->image rank is exactly j.
    n = 12
    txt = torch.zeros(n, n)
    for j in range(n):
        txt[j, j] = 0.5
        for o in range(1, j + 1):
            txt[j, (j + o) % n] = 1.0
    m = retrieval_metrics(torch.eye(n), txt, torch.arange(n), block_size=5)
    assert m["img_r1"] == pytest.approx(100 / 12)
    assert m["img_r5"] == pytest.approx(500 / 12)
    assert m["img_r10"] == pytest.approx(1000 / 12)
    assert m["img_mean_rank"] == pytest.approx(6.5)
    assert m["img_median_rank"] == 6.5


def test_known_graded_image_to_text_ranks_best_caption_wins():
    # 6 images, 2 captions each (texts one-hot): image i scores 0.5 on one caption, 0.2 on
    # the other and 1.0 on 2*i other texts -> its rank is 2*i (the better caption counts).
    n_img, t2i = 6, torch.arange(6).repeat_interleave(2)
    img = torch.zeros(n_img, 12)
    for i in range(n_img):
        img[i, 2 * i], img[i, 2 * i + 1] = 0.2, 0.5
        others = [j for j in range(12) if t2i[j] != i]
        img[i, others[: 2 * i]] = 1.0
    m = retrieval_metrics(img, torch.eye(12), t2i, block_size=4)
    # ranks 0, 2, 4, 6, 8, 10
    assert m["txt_r1"] == pytest.approx(100 / 6)
    assert m["txt_r5"] == pytest.approx(300 / 6)
    assert m["txt_r10"] == pytest.approx(500 / 6)
    assert m["txt_mean_rank"] == pytest.approx(6.0)
    assert m["txt_median_rank"] == 6.0


def test_int32_index_and_mixed_dtype_accepted():
    img, txt, t2i = make_random(seed=0)
    want = retrieval_metrics(img, txt, t2i)
    assert retrieval_metrics(img, txt, t2i.to(torch.int32)) == want
    assert retrieval_metrics(img.double(), txt.double(), t2i.tolist()) == want


def test_requires_grad_features():
    img, txt, t2i = make_random(seed=0)
    want = retrieval_metrics(img, txt, t2i)
    assert retrieval_metrics(img.requires_grad_(), txt.requires_grad_(), t2i) == want


# ---------------------------------------------------------------- chunking guarantee


def test_similarity_blocks_shapes():
    q, c = torch.randn(11, 3), torch.randn(7, 3)
    blocks = list(retrieval._similarity_blocks(q, c, 4))
    assert [s for s, _ in blocks] == [0, 4, 8]
    assert [tuple(b.shape) for _, b in blocks] == [(4, 7), (4, 7), (3, 7)]
    assert torch.allclose(torch.cat([b for _, b in blocks]), q @ c.T)


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_metrics_only_use_bounded_blocks(monkeypatch, block_size):
    seen = []
    original = retrieval._similarity_blocks

    def spy(queries, candidates, bs):
        for start, block in original(queries, candidates, bs):
            seen.append((queries.shape[0], candidates.shape[0], start, tuple(block.shape)))
            yield start, block

    monkeypatch.setattr(retrieval, "_similarity_blocks", spy)
    img, txt, t2i = make_random(seed=1, n_images=20)
    retrieval_metrics(img, txt, t2i, block_size=block_size)
    zero_shot_accuracy(img, txt[:9], torch.zeros(20, dtype=torch.long), block_size=block_size)
    assert seen
    for _, n_c, _, (rows, cols) in seen:
        assert rows <= block_size and cols == n_c
    # and the blocks cover every query row, once, per direction
    for n_q, n_c in {(a, b) for a, b, _, _ in seen}:
        rows = [r for a, b, _, (r, _) in seen if (a, b) == (n_q, n_c)]
        assert sum(rows) == n_q


def test_previous_block_is_freed_before_the_next(monkeypatch):
    original = retrieval._similarity_blocks
    n_blocks = []

    def spy(queries, candidates, bs):
        it = original(queries, candidates, bs)
        prev = None
        while True:
            # the caller has finished with the previous block: nothing may still hold it
            assert prev is None or prev() is None, "previous similarity block still alive"
            try:
                start, block = next(it)
            except StopIteration:
                return
            prev = weakref.ref(block)
            n_blocks.append(block.shape[0])
            yield start, block
            del block

    monkeypatch.setattr(retrieval, "_similarity_blocks", spy)
    img, txt, t2i = make_random(seed=1, n_images=20)
    retrieval_metrics(img, txt, t2i, block_size=3)
    zero_shot_accuracy(img, txt[:9], torch.zeros(20, dtype=torch.long), block_size=3)
    assert len(n_blocks) > 10


class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor (numel) any aten op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_larger_than_a_block_is_created():
    # Every aten op's output (matmul, comparisons, gathers, the input checks) stays within
    # block_size x max(I, T) or the size of the inputs; the full I x T matrix never appears.
    img, txt, t2i = make_random(seed=6, n_images=40, d=2)
    n_img, n_txt = img.shape[0], txt.shape[0]
    block_size = 3
    bound = max(block_size * max(n_img, n_txt), n_txt * 2, n_img + 1)
    assert bound < n_img * n_txt // 4  # the full matrix would be far bigger
    mode = _LargestOutput()
    with mode:
        retrieval_metrics(img, txt, t2i, block_size=block_size)
    assert 0 < mode.largest <= bound
    mode = _LargestOutput()
    with mode:
        zero_shot_accuracy(txt, img, t2i, block_size=block_size)
    assert 0 < mode.largest <= max(block_size * n_img, n_txt * 2)


# ---------------------------------------------------------------- retrieval errors


IMG, TXT, T2I = make_random(seed=0)  # 13 images, d = 6
N_TXT = len(T2I)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"image_features": torch.randn(13)}, r"image_features must be 2-D"),
        ({"text_features": torch.randn(2, 3, 6)}, r"text_features must be 2-D"),
        ({"text_features": torch.randn(5, 7)}, r"feature dims differ.*d=6.*d=7"),
        ({"image_features": torch.zeros(0, 6)}, r"image_features is empty"),
        ({"text_features": torch.zeros(0, 6)}, r"text_features is empty"),
        ({"image_features": torch.zeros(13, 0)}, r"image_features is empty"),
        ({"image_features": torch.ones(13, 6, dtype=torch.long)}, r"floating-point"),
        ({"image_features": [[1.0] * 6] * 13}, r"image_features must be a torch.Tensor"),
        ({"text_to_image": torch.zeros(3, dtype=torch.long)}, r"text_to_image must have shape"),
        ({"text_to_image": T2I[:, None]}, r"text_to_image must have shape"),
        ({"text_to_image": T2I.float()}, r"text_to_image must be an integer tensor"),
        ({"text_to_image": T2I > 0}, r"text_to_image must be an integer tensor"),
    ],
)
def test_retrieval_bad_shapes(over, match):
    args = {"image_features": IMG, "text_features": TXT, "text_to_image": T2I} | over
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(**args)


def test_retrieval_bad_values():
    img, txt, t2i = make_random(seed=0)
    n_img = img.shape[0]
    bad = t2i.clone()
    bad[3] = n_img
    with pytest.raises(ValueError, match=rf"text_to_image has 1 value\(s\) outside \[0, {n_img}\)"):
        retrieval_metrics(img, txt, bad)
    bad[3] = -1
    with pytest.raises(ValueError, match=r"outside"):
        retrieval_metrics(img, txt, bad)
    for name in ("image_features", "text_features"):
        for value in (math.nan, math.inf):
            args = {"image_features": img.clone(), "text_features": txt.clone()}
            args[name][1, 2] = value
            with pytest.raises(ValueError, match=rf"{name} contains non-finite"):
                retrieval_metrics(args["image_features"], args["text_features"], t2i)
    for block_size in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match=r"block_size must be an int >= 1"):
            retrieval_metrics(img, txt, t2i, block_size=block_size)


def test_retrieval_images_without_captions():
    img = torch.eye(5)
    t2i = torch.tensor([0, 0, 2, 4])  # images 1 and 3 have none
    with pytest.raises(ValueError, match=r"2 of 5 images have no caption"):
        retrieval_metrics(img, img[t2i], t2i)


# ---------------------------------------------------------------- zero-shot classifier


class FakeEncoder:
    """Deterministic text encoder: sum of a fixed random vector per whitespace token."""

    def __init__(self, d=8):
        self.d = d
        self.calls: list[list[str]] = []

    def token(self, tok: str) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(tok.encode()))
        return torch.randn(self.d, generator=gen, dtype=torch.float64)

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        assert isinstance(prompts, list)
        self.calls.append(list(prompts))
        return torch.stack([sum(self.token(t) for t in p.split()) for p in prompts])


CLASSES = ["cat", "dog", "sea lion", "red fox", "tram"]
TEMPLATES = ["a photo of a {}.", "a {} in the wild", "{}", "art of the {}, {{sic}}"]


def reference_classifier(encode, classes, templates):
    rows = []
    for c in classes:
        embs = []
        for t in templates:
            e = encode([t.format(c)])[0]
            embs.append(e / e.norm())
        mean = sum(embs) / len(embs)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 20, 256])
def test_zero_shot_classifier_matches_reference(batch_size):
    enc = FakeEncoder()
    got = zero_shot_classifier(enc, CLASSES, TEMPLATES, batch_size=batch_size)
    want = reference_classifier(FakeEncoder(), CLASSES, TEMPLATES)
    assert got.shape == (len(CLASSES), enc.d) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(len(CLASSES), dtype=torch.float64))
    # batching: every call within batch_size, every prompt exactly once, in order
    assert all(1 <= len(c) <= batch_size for c in enc.calls)
    flat = [p for c in enc.calls for p in c]
    assert flat == [t.format(c) for c in CLASSES for t in TEMPLATES]
    assert "art of the sea lion, {sic}" in flat
    assert len(enc.calls) == math.ceil(len(flat) / batch_size)


def test_zero_shot_classifier_is_not_a_plain_mean():
    # normalising before averaging matters when template embeddings have different norms
    def encode(prompts):
        return torch.tensor([[10.0, 0.0] if p.startswith("big") else [0.0, 1.0] for p in prompts])

    got = zero_shot_classifier(encode, ["x"], ["big {}", "small {}"])
    torch.testing.assert_close(got, torch.tensor([[1.0, 1.0]]) / math.sqrt(2))


def test_zero_shot_classifier_float32_and_single_template():
    enc = FakeEncoder()
    got = zero_shot_classifier(lambda p: enc(p).float(), CLASSES, ["{}"])
    assert got.dtype == torch.float32
    want = F.normalize(torch.stack([enc([c])[0] for c in CLASSES]), dim=1).float()
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    ("classes", "templates", "kwargs", "match"),
    [
        ([], TEMPLATES, {}, r"class_names is empty"),
        (CLASSES, [], {}, r"templates is empty"),
        ("cat", TEMPLATES, {}, r"class_names must be a sequence of str"),
        (CLASSES, "a {}", {}, r"templates must be a sequence of str"),
        (["cat", 3], TEMPLATES, {}, r"class_names\[1\] must be a str"),
        (CLASSES, ["a {}", "a photo"], {}, r"templates\[1\] 'a photo' must contain exactly one"),
        (CLASSES, ["{} and {}"], {}, r"templates\[0\].*found 2"),
        (CLASSES, ["a {name}"], {}, r"templates\[0\].*exactly one"),
        (CLASSES, ["a {{}}"], {}, r"templates\[0\].*found 0"),
        (CLASSES, ["a {"], {}, r"templates\[0\] 'a \{' is not a valid format string"),
        (CLASSES, TEMPLATES, {"batch_size": 0}, r"batch_size must be an int >= 1"),
    ],
)
def test_zero_shot_classifier_errors(classes, templates, kwargs, match):
    with pytest.raises(ValueError, match=match):
        zero_shot_classifier(FakeEncoder(), classes, templates, **kwargs)


def test_zero_shot_classifier_bad_encoder_output():
    with pytest.raises(ValueError, match=r"encode_text must return a \[2, d\] tensor"):
        zero_shot_classifier(lambda p: torch.zeros(1, 4), ["a", "b"], ["{}"])
    with pytest.raises(ValueError, match=r"encode_text must return"):
        zero_shot_classifier(lambda p: [[0.0]] * len(p), ["a"], ["{}"])
    with pytest.raises(ValueError, match=r"non-finite"):
        zero_shot_classifier(lambda p: torch.full((len(p), 2), math.nan), ["a"], ["{}"])
    dims = iter([3, 4])
    with pytest.raises(ValueError, match=r"d=4.*d=3"):
        zero_shot_classifier(lambda p: torch.ones(len(p), next(dims)), ["a", "b"], ["{}"],
                             batch_size=1)  # fmt: skip


# ---------------------------------------------------------------- zero-shot accuracy


def reference_topk(feats, classifier, labels, k):
    """Percent of rows whose label is among the k highest logits (sorted, one row at a time)."""
    hits = 0
    for x, y in zip(feats, labels.tolist()):
        logits = [_score(x, w) for w in classifier]
        top = sorted(range(len(logits)), key=lambda c: -logits[c])[:k]
        hits += y in top
    return 100.0 * hits / len(labels)


def make_zero_shot(n=60, c=7, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    classifier = F.normalize(torch.randn(c, d, generator=gen), dim=1)
    labels = torch.randint(0, c, (n,), generator=gen)
    feats = F.normalize(classifier[labels] + 0.9 * torch.randn(n, d, generator=gen), dim=1)
    return feats, classifier, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_shot_accuracy_matches_reference(seed):
    feats, classifier, labels = make_zero_shot(seed=seed)
    got = zero_shot_accuracy(feats, classifier, labels, topk=(1, 2, 5), block_size=8)
    assert list(got) == ["top1", "top2", "top5"]
    for k in (1, 2, 5):
        assert got[f"top{k}"] == pytest.approx(reference_topk(feats, classifier, labels, k))
    # top1 by a plain argmax loop too
    argmax_hits = sum(int(torch.argmax(x @ classifier.T)) == y for x, y in zip(feats, labels))
    assert got["top1"] == pytest.approx(100.0 * argmax_hits / len(labels))
    assert 0 < got["top1"] < got["top5"] < 100


def test_zero_shot_accuracy_block_sizes_and_int32():
    feats, classifier, labels = make_zero_shot(seed=3)
    want = zero_shot_accuracy(feats, classifier, labels)
    for b in (1, 2, 7, 60, 61, 10_000):
        assert zero_shot_accuracy(feats, classifier, labels, block_size=b) == want
    assert zero_shot_accuracy(feats, classifier, labels.int()) == want


def test_zero_shot_accuracy_k_clipped_to_classes():
    feats, classifier, labels = make_zero_shot(c=3, seed=4)
    got = zero_shot_accuracy(feats, classifier, labels, topk=(1, 3, 5, 100))
    assert got["top3"] == got["top5"] == got["top100"] == 100.0
    assert got["top1"] == pytest.approx(reference_topk(feats, classifier, labels, 1))


def test_zero_shot_accuracy_known_case_and_ties():
    classifier = torch.eye(3)
    feats = torch.tensor([[1.0, 0, 0], [0, 0.5, 1.0], [0, 0, 0], [0.2, 0.9, 0.5]])
    labels = torch.tensor([0, 1, 2, 2])
    # ranks: 0; 1; 0 (three-way tie counts for the image); 1
    got = zero_shot_accuracy(feats, classifier, labels, topk=(1, 2))
    assert got == {"top1": 50.0, "top2": 100.0}


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"image_features": torch.randn(60)}, r"image_features must be 2-D"),
        ({"classifier": torch.randn(7, 4)}, r"feature dims differ"),
        ({"classifier": torch.zeros(0, 5)}, r"classifier is empty"),
        ({"labels": torch.zeros(59, dtype=torch.long)}, r"labels must have shape \(60,\)"),
        ({"labels": torch.zeros(60)}, r"labels must be an integer"),
        ({"labels": torch.full((60,), 7)}, r"labels has 60 value\(s\) outside \[0, 7\)"),
        ({"topk": ()}, r"topk must be a non-empty sequence"),
        ({"topk": 5}, r"topk must be a non-empty sequence"),
        ({"topk": (1, 0)}, r"topk values must be ints >= 1"),
        ({"block_size": 0}, r"block_size must be an int >= 1"),
    ],
)
def test_zero_shot_accuracy_errors(over, match):
    feats, classifier, labels = make_zero_shot()
    args = {"image_features": feats, "classifier": classifier, "labels": labels} | over
    with pytest.raises(ValueError, match=match):
        zero_shot_accuracy(**args)


def test_non_finite_classifier():
    feats, classifier, labels = make_zero_shot()
    classifier[2, 1] = math.inf
    with pytest.raises(ValueError, match=r"classifier contains non-finite"):
        zero_shot_accuracy(feats, classifier, labels)


# ---------------------------------------------------------------- package and device


def test_exported_from_package():
    assert mm_eval.retrieval_metrics is retrieval_metrics
    assert mm_eval.zero_shot_classifier is zero_shot_classifier
    assert mm_eval.zero_shot_accuracy is zero_shot_accuracy
    assert {"retrieval_metrics", "zero_shot_classifier", "zero_shot_accuracy"} <= set(
        mm_eval.__all__
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    img, txt, t2i = make_random(seed=4, ties=True, n_images=30)
    want = retrieval_metrics(img, txt, t2i, block_size=7)
    assert retrieval_metrics(img.cuda(), txt.cuda(), t2i, block_size=7) == want
    feats, classifier, labels = make_zero_shot()
    want = zero_shot_accuracy(feats, classifier, labels)
    assert zero_shot_accuracy(feats.cuda(), classifier.cuda(), labels.cuda()) == want
