"""DualEncoder and the offline WordPiece tokenizer: tiny towers on CPU, nothing downloaded."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from mm_models.dual_encoder import DualEncoder, DualEncoderConfig
from mm_models.text_tokenizer import load_or_train_tokenizer, train_wordpiece_tokenizer

IMAGE_MODEL = "test_resnet"  # timm's smallest ResNet (~0.4 M parameters)
SIZE = 32
EMBED = 16
MAX_LENGTH = 30


def make_captions(n: int = 50) -> list[str]:
    """n distinct generated captions."""
    counts = ["a", "two", "three", "several"]
    colours = ["red", "blue", "green", "black", "white"]
    animals = ["dog", "cat", "horse", "bird"]
    places = ["grass", "beach", "street", "sofa"]
    combos = itertools.product(counts, colours, animals, places)
    return [f"A photo of {n} {c} {a}s on the {p}." for n, c, a, p in itertools.islice(combos, n)]


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return make_captions()


@pytest.fixture(scope="module")
def tok(captions):
    return train_wordpiece_tokenizer(captions, vocab_size=200)


def tiny_text_spec(vocab_size: int) -> dict:
    return dict(
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        vocab_size=vocab_size,
        max_position_embeddings=64,
    )


@pytest.fixture(scope="module")
def config(tok) -> DualEncoderConfig:
    return DualEncoderConfig(
        image_model=IMAGE_MODEL,
        image_size=SIZE,
        text_model=tiny_text_spec(len(tok)),
        embed_dim=EMBED,
    )


@pytest.fixture(scope="module")
def model(config, tok) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(config, tokenizer=tok).eval()


@pytest.fixture(scope="module")
def batch(tok, captions):
    torch.manual_seed(1)
    text = tok(
        captions[:4],
        padding="max_length",
        truncation=True,
        max_length=MAX_LENGTH,
        return_tensors="pt",
    )
    return torch.randn(4, 3, SIZE, SIZE), text["input_ids"], text["attention_mask"]


def embeddings(model: DualEncoder, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model(*batch)


# ------------------------------------------------------------------------------ tokenizer


def test_tokenizer_special_tokens_padding_and_truncation(tok, captions):
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    assert (tok.pad_token, tok.cls_token, tok.sep_token, tok.unk_token, tok.mask_token) == (
        "[PAD]",
        "[CLS]",
        "[SEP]",
        "[UNK]",
        "[MASK]",
    )
    long = " ".join(captions[:5])  # far more than 30 tokens
    out = tok(
        [captions[0], long],
        padding="max_length",
        truncation=True,
        max_length=MAX_LENGTH,
        return_tensors="pt",
    )
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (2, MAX_LENGTH)
    n = int(mask[0].sum())
    assert ids[0, 0] == tok.cls_token_id and ids[0, n - 1] == tok.sep_token_id
    assert (ids[0, n:] == tok.pad_token_id).all() and (mask[0, n:] == 0).all()
    assert tok.decode(ids[0], skip_special_tokens=True) == captions[0].lower()
    assert mask[1].all() and ids[1, 0] == tok.cls_token_id and ids[1, -1] == tok.sep_token_id


def test_tokenizer_unknown_words(tok):
    pieces = tok.tokenize("catdog")  # unseen word made of seen characters: subwords
    assert len(pieces) > 1 and pieces[1].startswith("##") and "[UNK]" not in pieces
    assert tok.tokenize("zq€") == ["[UNK]"]  # characters never seen
    assert tok.tokenize("DOGS") == tok.tokenize("dogs") == ["dogs"]  # lowercased


def test_tokenizer_round_trip(tok, captions, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    loaded = load_or_train_tokenizer(str(tmp_path / "tok"))
    kw = dict(padding="max_length", truncation=True, max_length=MAX_LENGTH)
    texts = [*captions, "Zebra catdog!"]
    assert loaded(texts, **kw)["input_ids"] == tok(texts, **kw)["input_ids"]
    assert len(loaded) == len(tok) and loaded.pad_token_id == tok.pad_token_id
    trained = load_or_train_tokenizer(None, captions, vocab_size=200)
    assert trained.all_special_tokens == tok.all_special_tokens
    assert tok.unk_token_id not in {i for ids in trained(captions)["input_ids"] for i in ids}


def test_tokenizer_training_is_deterministic_and_keeps_the_frequent_words(captions):
    """Two trainings give the same vocabulary (the tokenizers trainer does not): special
    tokens, every character (start and ##continuation), then words by frequency."""
    from collections import Counter

    a = train_wordpiece_tokenizer(captions, vocab_size=200)
    b = train_wordpiece_tokenizer(list(reversed(captions)), vocab_size=200)
    assert a.get_vocab() == b.get_vocab()
    vocab = a.get_vocab()
    words = Counter(w for c in captions for w in c.lower().replace(".", " . ").split())
    frequent = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    kept = [w for w in frequent if w in vocab]
    assert kept == frequent[: len(kept)] and len(kept) > 0  # a prefix of the frequency order
    assert all(c in vocab and f"##{c}" in vocab for w in words for c in w)


def test_tokenizer_bad_inputs(tmp_path, captions):
    with pytest.raises(ValueError, match="does not exist"):
        load_or_train_tokenizer(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a tokenizer directory"):
        load_or_train_tokenizer(tmp_path / "empty")
    with pytest.raises(ValueError, match="texts to train on"):
        load_or_train_tokenizer(None)
    with pytest.raises(ValueError, match="single string"):
        train_wordpiece_tokenizer("a photo of a dog")
    with pytest.raises(ValueError, match="empty"):
        train_wordpiece_tokenizer([])
    with pytest.raises(ValueError, match=r"texts\[1\] must be a str"):
        train_wordpiece_tokenizer(["a dog", 3])
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece_tokenizer(captions, vocab_size=3)


# ---------------------------------------------------------------------------- dual encoder


def test_shapes_norms_and_projections(model, batch):
    image_emb, text_emb = embeddings(model, batch)
    assert image_emb.shape == text_emb.shape == (4, EMBED)
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(text_emb.norm(dim=-1), torch.ones(4))
    assert model.image_proj.in_features == model.image_encoder.num_features == model.image_features
    assert model.text_proj.in_features == 32 and model.image_proj.out_features == EMBED
    assert model.text_proj.out_features == EMBED
    groups = model.parameter_groups()
    assert list(groups) == ["image_encoder", "image_proj", "text_encoder", "text_proj"]
    assert sum(len(ps) for ps in groups.values()) == len(list(model.parameters()))
    unnormalised = DualEncoder(dataclasses.replace(model.config, normalize=False)).eval()
    _, raw = embeddings(unnormalised, batch)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(4))


def test_gradients_reach_both_towers(model, batch):
    model.train()
    try:
        image_emb, text_emb = model(*batch)
        (image_emb @ text_emb.T).diagonal().sum().backward()
        for name, params in model.parameter_groups().items():
            grads = [p.grad for p in params if p.grad is not None]
            assert grads and any(g.abs().sum() > 0 for g in grads), name
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_text_uses_first_token_and_ignores_padding(model, batch, tok):
    _, ids, mask = batch
    with torch.no_grad():
        reference = model.encode_text(ids, mask)
        noisy = ids.clone()
        noisy[mask == 0] = torch.randint(5, len(tok), (int((mask == 0).sum()),))
        torch.testing.assert_close(model.encode_text(noisy, mask), reference)
        changed = ids.clone()
        changed[:, 1] = tok.mask_token_id  # a real token changes the [CLS] output
        assert not torch.allclose(model.encode_text(changed, mask), reference)
    assert (ids[:, 0] == tok.cls_token_id).all()


def test_text_model_from_local_directory(model, batch, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model.text_encoder.save_pretrained(tmp_path / "text")
    config = dataclasses.replace(model.config, text_model=str(tmp_path / "text"))
    local = DualEncoder(config).eval()
    local.text_proj.load_state_dict(model.text_proj.state_dict())
    _, ids, mask = batch
    with torch.no_grad():
        torch.testing.assert_close(local.encode_text(ids, mask), model.encode_text(ids, mask))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_image_weights_from_local_file(model, batch, tmp_path, suffix):
    path = tmp_path / f"image{suffix}"
    state = dict(model.image_encoder.state_dict())
    state["fc.weight"] = torch.zeros(10, model.image_features)  # a classifier: dropped on load
    state["fc.bias"] = torch.zeros(10)
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(123)
    loaded = DualEncoder(dataclasses.replace(model.config, image_weights=str(path))).eval()
    loaded.image_proj.load_state_dict(model.image_proj.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(batch[0]), model.encode_image(batch[0]))


def test_image_weights_errors(model, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        DualEncoder(dataclasses.replace(model.config, image_weights=str(tmp_path / "no.pth")))
    state = dict(model.image_encoder.state_dict())
    first = next(iter(state))
    state["extra.weight"] = torch.zeros(3)
    state[first] = torch.zeros(1)
    del state[list(state)[-2]]
    torch.save(state, tmp_path / "bad.pth")
    bad = dataclasses.replace(model.config, image_weights=str(tmp_path / "bad.pth"))
    with pytest.raises(
        ValueError, match=r"missing keys.*unexpected keys \(1\): extra\.weight.*shape"
    ):
        DualEncoder(bad)


def test_save_and_load_round_trip(model, batch, tmp_path):
    model.save_pretrained(tmp_path / "clip")
    loaded = DualEncoder.from_pretrained(tmp_path / "clip").eval()
    assert loaded.config == model.config
    for got, want in zip(embeddings(loaded, batch), embeddings(model, batch)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not exist"):
        DualEncoder.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "partial").mkdir()
    with pytest.raises(ValueError, match=r"dual_encoder_config\.json is missing"):
        DualEncoder.from_pretrained(tmp_path / "partial")


def test_bad_configs_and_inputs(model, config, tok, batch):
    with pytest.raises(
        ValueError, match=r"unknown timm model name 'resnet5'; close matches: resnet50,"
    ):
        DualEncoder(dataclasses.replace(config, image_model="resnet5"))
    with pytest.raises(ValueError, match="embed_dim"):
        DualEncoderConfig(embed_dim=0)
    with pytest.raises(ValueError, match="image_size"):
        DualEncoderConfig(image_size=-3)
    small = dataclasses.replace(config, text_model=tiny_text_spec(len(tok) - 1))
    with pytest.raises(ValueError, match=rf"vocab_size {len(tok) - 1} is smaller.*{len(tok)}"):
        DualEncoder(small, tokenizer=tok)
    with pytest.raises(ValueError, match="text_model path '/no/such/dir' does not exist"):
        DualEncoder(dataclasses.replace(config, text_model="/no/such/dir"))
    with pytest.raises(ValueError, match=r"unknown distilbert config keys \['n_layer'\]"):
        DualEncoder(dataclasses.replace(config, text_model={"n_layer": 2}))
    images, ids, mask = batch
    with pytest.raises(ValueError, match=rf"\[batch, 3, {SIZE}, {SIZE}\]"):
        model.encode_image(images[:, :, :16])
    with pytest.raises(ValueError, match="input_ids must be in"):
        model.encode_text(ids + len(tok), mask)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model.encode_text(ids, mask[:, :-1])
    with pytest.raises(ValueError, match="integer"):
        model.encode_text(ids.float(), mask)


def test_image_kwargs_build_a_small_vit_that_round_trips(config, tok, batch, tmp_path):
    """timm keyword arguments (a ViT for 32 px images, 8 px patches) are kept in the config."""
    vit = dataclasses.replace(
        config,
        image_model="vit_tiny_patch16_224",
        image_size=SIZE,
        image_kwargs={"img_size": SIZE, "patch_size": 8, "depth": 2, "embed_dim": 48,
                      "num_heads": 2},
    )  # fmt: skip
    torch.manual_seed(0)
    model = DualEncoder(vit, tokenizer=tok).eval()
    assert model.image_features == 48
    tokens = model.image_encoder.forward_features(batch[0])
    assert tokens.shape == (4, 1 + (SIZE // 8) ** 2, 48)  # CLS + the patch grid
    model.save_pretrained(tmp_path / "vit")
    loaded = DualEncoder.from_pretrained(tmp_path / "vit").eval()
    assert loaded.config.image_kwargs == vit.image_kwargs
    for got, want in zip(embeddings(loaded, batch), embeddings(model, batch)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="image_kwargs may not set"):
        dataclasses.replace(config, image_kwargs={"num_classes": 3})
    with pytest.raises(ValueError, match="do not fit 'resnet18'"):
        DualEncoder(dataclasses.replace(config, image_model="resnet18",
                                        image_kwargs={"no_such_option": 1}))  # fmt: skip
