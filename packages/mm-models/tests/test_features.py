"""Tests for mm_models.features: per-layer LM and ViT features, bits per byte, the file format."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mm_models.features import (
    ids_hash,
    lm_features,
    load_features,
    load_lm,
    save_features,
    vit_features,
)
from mm_models.gridvlm import train_bpe_tokenizer

TEXTS = ["a red cube on a table", "two dogs", "the quick brown fox jumps over the lazy dog", "x"]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    tokenizer = train_bpe_tokenizer(TEXTS * 20, vocab_size=300, out_dir=folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_lm_features_are_masked_means_of_every_layer_and_batching_does_not_matter(lm_dir):
    model, tokenizer = load_lm(lm_dir)
    feats, bpb = lm_features(model, tokenizer, TEXTS, batch_size=3, progress=False)
    assert feats.shape == (4, 3, 16)  # embeddings + 2 blocks
    for i, text in enumerate(TEXTS):  # one text at a time: no padding at all
        ids = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            out = model(**ids, output_hidden_states=True)
        want = torch.stack([h[0].mean(dim=0) for h in out.hidden_states])
        assert torch.allclose(feats[i], want, atol=1e-5)
        targets = ids["input_ids"][0, 1:]
        nats = torch.nn.functional.cross_entropy(out.logits[0, :-1], targets, reduction="sum")
        assert bpb[i] == pytest.approx(float(nats) / math.log(2) / len(text.encode()), rel=1e-5)
    one, _ = lm_features(model, tokenizer, TEXTS, batch_size=1, progress=False)
    assert torch.allclose(one, feats, atol=1e-5)


def test_load_lm_names_a_path_without_a_model(tmp_path):
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_lm(tmp_path)


def test_vit_features_are_the_cls_token_after_every_block():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, embed_dim=24, depth=3, num_heads=2).eval()  # fmt: skip
    images = torch.randn(5, 3, 32, 32)
    feats = vit_features(model, images, batch_size=2, progress=False)
    assert feats.shape == (5, 3, 24)
    with torch.no_grad():  # the residual stream by hand
        x = model.patch_embed(images)
        x = model._pos_embed(x)
        x = model.norm_pre(x)
        for k, block in enumerate(model.blocks):
            x = block(x)
            assert torch.allclose(feats[:, k], x[:, 0], atol=1e-5)
    by_rows = vit_features(model, lambda rows: images[rows], n=5, batch_size=4, progress=False)
    assert torch.equal(by_rows, feats)
    no_cls = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                               embed_dim=24, depth=1, num_heads=2, class_token=False,
                               global_pool="avg")  # fmt: skip
    with pytest.raises(ValueError, match="no CLS token"):
        vit_features(no_cls, images, progress=False)


def test_features_files_round_trip_and_are_checked(tmp_path):
    feats = torch.randn(4, 2, 3)
    ids = ["a", "b", "c", "d"]
    path = save_features(tmp_path / "m.pt", feats, ids, model="tiny", pool="avg")
    payload = load_features(path)
    assert torch.equal(payload["feats"], feats) and payload["model"] == "tiny"
    assert payload["ids_hash"] == ids_hash(ids) != ids_hash(["b", "a", "c", "d"])
    with pytest.raises(ValueError, match="3 ids for 4"):
        save_features(tmp_path / "x.pt", feats, ids[:3])
    torch.save({"feats": feats}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an mm-features"):
        load_features(tmp_path / "other.pt")
    bad = feats.clone()
    bad[0, 0, 0] = float("nan")
    save_features(tmp_path / "nan.pt", bad, ids)
    with pytest.raises(ValueError, match="NaN"):
        load_features(tmp_path / "nan.pt")
