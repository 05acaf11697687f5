"""gridvlm: BPE tokenizer, GPT-2 from a config, token encoders, GridVLM; tiny models on CPU."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mm_models.gridvlm import (
    ENDOFTEXT,
    GridVLM,
    LMConfig,
    OneHotCellEncoder,
    Projector,
    TimmTokenEncoder,
    VLMConfig,
    build_lm,
    build_vision_encoder,
    train_bpe_tokenizer,
)

OBJECTS = ["horse", "bird", "cat", "frog"]
ROWS = COLS = 3
VIT = dict(patch_size=8, depth=1, embed_dim=32, num_heads=2)  # 32 px -> 4 x 4 patches


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_grid(rng: random.Random) -> tuple[list[int], str, str]:
    """(cell class ids, prompt, answer) of one random 3 x 3 grid."""
    cells = [rng.randrange(len(OBJECTS)) for _ in range(ROWS * COLS)]
    rows = "\n".join(
        "| " + " | ".join(OBJECTS[c] for c in cells[r * COLS : (r + 1) * COLS]) + " |"
        for r in range(ROWS)
    )
    r, c = rng.randrange(ROWS), rng.randrange(COLS)
    prompt = (
        f"{rows}\nThe grid above is size {ROWS} by {COLS}. Each cell contains an object from "
        f"{OBJECTS}.\nWhat object is in row {r + 1}, column {c + 1}? A:"
    )
    return cells, prompt, f" {OBJECTS[cells[r * COLS + c]]}"


@pytest.fixture(scope="module")
def grids():
    rng = random.Random(0)
    return [make_grid(rng) for _ in range(40)]


@pytest.fixture(scope="module")
def texts(grids):
    return [prompt + answer for _, prompt, answer in grids]


@pytest.fixture(scope="module")
def tok(texts):
    return train_bpe_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def lm_config(tok):
    return LMConfig.from_tokenizer(tok, n_positions=160, n_embd=32, n_layer=2, n_head=2)


def random_lm(lm_config, seed=0, std=0.5):
    """A tiny LM with larger random weights, so greedy answers vary from token to token."""
    torch.manual_seed(seed)
    lm = build_lm(lm_config)
    with torch.no_grad():
        for param in lm.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, std)
    return lm.eval()


def onehot_model(lm_config, projector="mlp", **freeze) -> GridVLM:
    config = VLMConfig(
        encoder="onehot",
        encoder_kwargs={"num_classes": len(OBJECTS), "rows": ROWS, "cols": COLS},
        projector=projector,
        **freeze,
    )
    torch.manual_seed(1)
    return GridVLM(config, random_lm(lm_config)).eval()


def vit_model(lm_config, **freeze) -> GridVLM:
    torch.manual_seed(2)
    vision = TimmTokenEncoder("vit_tiny_patch16_224", 32, **VIT)
    return GridVLM(VLMConfig(**vision.config_fields(), **freeze), random_lm(lm_config), vision)


class QuadrantEncoder(nn.Module):
    """A "custom" encoder: the four 4 x 4 quadrants of an 8 x 8 image, each a Linear token."""

    num_tokens = 4

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.proj = nn.Linear(3 * 16, width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        quads = pixel_values.unfold(2, 4, 4).unfold(3, 4, 4)  # [B, 3, 2, 2, 4, 4]
        return self.proj(quads.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2))


# ------------------------------------------------------------------------------ tokenizer


def test_tokenizer_roundtrip_special_tokens_and_reload(tok, texts, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.eos_token == tok.bos_token == tok.pad_token == ENDOFTEXT
    assert tok.pad_token_id == tok.eos_token_id == 0
    assert len(tok) <= 300
    assert tok.decode(tok(texts[0] + ENDOFTEXT)["input_ids"][-1:]) == ENDOFTEXT
    # deterministic: another run, texts in another order, gives the same tokenizer
    again = train_bpe_tokenizer(texts[::-1], vocab_size=300, out_dir=tmp_path / "tok")
    assert again.get_vocab() == tok.get_vocab()
    for loaded in (
        AutoTokenizer.from_pretrained(tmp_path / "tok"),
        PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok"),
    ):
        assert loaded.pad_token_id == loaded.eos_token_id == 0
        for text in texts[:5]:
            assert loaded(text)["input_ids"] == tok(text)["input_ids"]


def test_add_bos_starts_every_encoded_text_with_endoftext_and_survives_a_reload(texts, tmp_path):
    from transformers import AutoTokenizer

    plain = train_bpe_tokenizer(texts, vocab_size=300)
    bos = train_bpe_tokenizer(texts, vocab_size=300, out_dir=tmp_path / "bos", add_bos=True)
    assert bos.get_vocab() == plain.get_vocab()  # the same merges, only the template differs
    loaded = AutoTokenizer.from_pretrained(tmp_path / "bos")
    for text in texts[:5]:
        bare = plain(text)["input_ids"]
        assert bare[0] != plain.bos_token_id  # the default adds nothing (GPT-2)
        for tok in (bos, loaded):
            assert tok(text)["input_ids"] == [tok.bos_token_id, *bare]
            assert tok.encode(text) == [0, *bare]
            assert tok.encode(text, add_special_tokens=False) == bare
            assert tok.decode(tok.encode(text), skip_special_tokens=True) == text
    with pytest.raises(ValueError, match="add_bos must be a bool"):
        train_bpe_tokenizer(texts, vocab_size=300, add_bos=1)


def test_tokenizer_rejects_bad_arguments(texts):
    with pytest.raises(ValueError, match="vocab_size must be an int >= 257"):
        train_bpe_tokenizer(texts, vocab_size=100)
    with pytest.raises(ValueError, match="not a single string"):
        train_bpe_tokenizer(texts[0], vocab_size=300)
    with pytest.raises(ValueError, match="empty"):
        train_bpe_tokenizer([], vocab_size=300)


# ------------------------------------------------------------------------------------- LM


def test_build_lm_from_config_and_validation(lm_config, tok):
    import dataclasses

    from transformers import GPT2LMHeadModel, GPTJForCausalLM

    lm = build_lm(lm_config)
    assert isinstance(lm, GPTJForCausalLM)
    assert lm.config.rotary_dim == 16  # the whole head (32 / 2)
    gpt2 = build_lm(dataclasses.replace(lm_config, family="gpt2"))
    assert isinstance(gpt2, GPT2LMHeadModel) and gpt2.config.n_positions == 160
    with pytest.raises(ValueError, match="family must be one of"):
        dataclasses.replace(lm_config, family="llama")
    with pytest.raises(ValueError, match=r"rotary_dim \(18\) must be even and at most the head"):
        dataclasses.replace(lm_config, rotary_dim=18)
    assert lm.config.vocab_size == len(tok)
    assert lm.config.eos_token_id == lm.config.pad_token_id == tok.eos_token_id
    assert lm.config.n_positions == 160 and lm.config.n_embd == 32
    with pytest.raises(ValueError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        LMConfig(vocab_size=300, n_positions=64, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match=r"eos_token_id \(300\) must be below vocab_size"):
        LMConfig(vocab_size=300, n_positions=64, eos_token_id=300)
    with pytest.raises(ValueError, match="dropout"):
        LMConfig(vocab_size=300, n_positions=64, dropout=1.5)


@pytest.mark.parametrize("family", ["gptj", "gpt2"])
def test_init_std_sets_the_spread_of_the_initial_weights(lm_config, family):
    import dataclasses

    torch.manual_seed(0)
    for std in (0.02, 0.1):
        lm = build_lm(dataclasses.replace(lm_config, family=family, init_std=std))
        assert lm.config.initializer_range == std
        matrices = [w.detach().flatten() for w in lm.parameters() if w.dim() == 2]
        spread = torch.cat(matrices).std().item()
        # GPT-2's residual projections are scaled down by sqrt(2 n_layer): a loose bound
        assert 0.7 * std < spread < 1.05 * std, (family, std, spread)
    for bad in (0.0, -0.1, True):
        with pytest.raises(ValueError, match="init_std must be a positive float"):
            dataclasses.replace(lm_config, init_std=bad)


# ------------------------------------------------------------------------------- encoders


def test_onehot_cell_encoder_is_exact():
    encoder = OneHotCellEncoder(num_classes=4, rows=2, cols=3)
    assert (encoder.width, encoder.num_tokens) == (4, 6)
    cells = torch.tensor([[0, 1, 2, 3, 3, 0], [2, 2, 1, 0, 1, 3]])
    tokens = encoder(cells)
    assert tokens.shape == (2, 6, 4) and tokens.dtype == torch.float32
    assert torch.equal(tokens, torch.eye(4)[cells])
    assert torch.equal(encoder(cells.view(2, 2, 3)), tokens)
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        encoder(torch.tensor([[0, 1, 2, 3, 4, 0]]))
    with pytest.raises(ValueError, match=r"\[batch, 6\]"):
        encoder(torch.zeros(2, 5, dtype=torch.long))


def test_onehot_cell_encoder_with_positions_appends_the_cell_index():
    encoder = OneHotCellEncoder(num_classes=4, rows=2, cols=3, positions=True)
    assert (encoder.width, encoder.num_tokens) == (4 + 6, 6)
    cells = torch.tensor([[0, 1, 2, 3, 3, 0], [2, 2, 1, 0, 1, 3]])
    tokens = encoder(cells)
    assert tokens.shape == (2, 6, 10)
    for b in range(2):
        for k in range(6):  # token k: class one-hot, then position one-hot (row-major)
            expected = [0.0] * 10
            expected[int(cells[b, k])] = 1.0
            expected[4 + k] = 1.0
            assert tokens[b, k].tolist() == expected
    rebuilt = build_vision_encoder(VLMConfig(**encoder.config_fields()))
    assert rebuilt.positions and torch.equal(rebuilt(cells), tokens)
    with pytest.raises(ValueError, match="positions must be a bool"):
        OneHotCellEncoder(num_classes=4, rows=2, cols=3, positions="yes")


def test_timm_vit_tokens_drop_the_cls_token():
    torch.manual_seed(0)
    encoder = TimmTokenEncoder("vit_tiny_patch16_224", 32, **VIT).eval()
    assert encoder.num_tokens == (32 // 8) ** 2 and encoder.grid_size == (4, 4)
    assert encoder.width == 32 and encoder.num_prefix_tokens == 1
    images = torch.randn(2, 3, 32, 32)
    tokens = encoder(images)
    assert tokens.shape == (2, 16, 32)
    assert torch.equal(tokens, encoder.model.forward_features(images)[:, 1:])
    with pytest.raises(ValueError, match=r"pixel_values must be \[batch, 3, 32, 32\]"):
        encoder(torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="unknown timm model name"):
        TimmTokenEncoder("vit_tinyy_patch16_224", 32)


def test_timm_cnn_feature_map_is_flattened_row_major(tmp_path):
    torch.manual_seed(0)
    encoder = TimmTokenEncoder("test_resnet", 64).eval()  # stride 32 -> 2 x 2 map
    images = torch.randn(2, 3, 64, 64)
    fmap = encoder.model.forward_features(images)
    _, channels, h, w = fmap.shape
    assert encoder.grid_size == (h, w) and encoder.num_tokens == h * w
    assert encoder.width == channels
    tokens = encoder(images)
    assert tokens.shape == (2, h * w, channels)
    for i in range(h):
        for j in range(w):
            assert torch.equal(tokens[:, i * w + j], fmap[:, :, i, j])
    # local weights: loaded exactly; a missing file is named
    path = tmp_path / "resnet.pt"
    torch.save(encoder.model.state_dict(), path)
    loaded = TimmTokenEncoder("test_resnet", 64, pretrained_path=path).eval()
    assert torch.equal(loaded(images), tokens)
    with pytest.raises(ValueError, match=r"pretrained_path .*nope\.pt.* does not exist"):
        TimmTokenEncoder("test_resnet", 64, pretrained_path=tmp_path / "nope.pt")


def test_the_image_tower_of_a_dual_encoder_plugs_in():
    from mm_models.dual_encoder import DualEncoder, DualEncoderConfig

    torch.manual_seed(0)
    text = dict(dim=16, n_layers=1, n_heads=2, hidden_dim=32, vocab_size=50)
    dual = DualEncoder(
        DualEncoderConfig(image_model="test_resnet", image_size=64, text_model=text, embed_dim=8)
    ).eval()
    encoder = TimmTokenEncoder.from_dual_encoder(dual).eval()
    assert encoder.config_fields()["encoder_kwargs"] == {"image_size": 64}
    images = torch.randn(2, 3, 64, 64)
    fmap = dual.image_encoder.forward_features(images)
    assert torch.equal(encoder(images), fmap.flatten(2).transpose(1, 2))


# ------------------------------------------------------------------------------- GridVLM


def text_batch(tok, grids, n, padding_side="right"):
    """Prompt+answer ids with answer-only labels, padded with eos; and the cell ids."""
    cells = torch.tensor([g[0] for g in grids[:n]])
    prompts = [tok(g[1])["input_ids"] for g in grids[:n]]
    answers = [tok(g[2] + ENDOFTEXT)["input_ids"] for g in grids[:n]]
    length = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
    ids = torch.full((n, length), tok.pad_token_id)
    mask = torch.zeros(n, length, dtype=torch.long)
    labels = torch.full((n, length), -100)
    for row, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        seq = p + a
        start = 0 if padding_side == "right" else length - len(seq)
        ids[row, start : start + len(seq)] = torch.tensor(seq)
        mask[row, start : start + len(seq)] = 1
        labels[row, start + len(p) : start + len(seq)] = torch.tensor(a)
    return cells, ids, mask, labels


def test_image_tokens_come_first_and_the_loss_covers_text_only(lm_config, tok, grids):
    model = onehot_model(lm_config)
    cells, ids, mask, labels = text_batch(tok, grids, 3)
    n_image = ROWS * COLS
    embeds, full_mask = model.embed(cells, ids, mask)
    assert embeds.shape == (3, n_image + ids.shape[1], 32)
    assert torch.equal(embeds[:, :n_image], model.projector(model.vision(cells)))
    assert torch.equal(embeds[:, n_image:], model.lm.get_input_embeddings()(ids))
    assert torch.equal(full_mask[:, :n_image], torch.ones(3, n_image, dtype=torch.long))
    assert torch.equal(full_mask[:, n_image:], mask)

    out = model(cells, ids, mask, labels=labels)
    logits = out.logits
    assert logits.shape == (3, n_image + ids.shape[1], len(tok))
    # text label j is predicted at position n_image + j - 1; image positions carry no label
    text_logits = logits[:, n_image - 1 : -1]
    manual = F.cross_entropy(
        text_logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, manual)
    # the same batch left-padded gives the same logits at every real text token and loss
    _, ids_l, mask_l, labels_l = text_batch(tok, grids, 3, padding_side="left")
    out_l = model(cells, ids_l, mask_l, labels=labels_l)
    torch.testing.assert_close(out_l.loss, out.loss)
    real_r = logits[:, n_image:][mask.bool()]
    real_l = out_l.logits[:, n_image:][mask_l.bool()]
    torch.testing.assert_close(real_l, real_r, atol=1e-4, rtol=1e-4)


def test_width_and_batch_mismatches_raise(lm_config, tok, grids):
    lm = random_lm(lm_config)
    config = VLMConfig(encoder="custom", projector="linear")
    with pytest.raises(
        ValueError, match="vision encoder width 8 does not match the projector's input width 6"
    ):
        GridVLM(config, lm, QuadrantEncoder(8), Projector("linear", 6, 32))
    model = GridVLM(config, lm, QuadrantEncoder(8))
    images = torch.randn(2, 3, 8, 8)
    cells, ids, mask, _ = text_batch(tok, grids, 2)
    assert model(images, ids, mask).logits.shape[1] == 4 + ids.shape[1]
    model.vision.width = 6  # an encoder that gives tokens of another width than it promised
    model.vision.proj = nn.Linear(48, 6)
    with pytest.raises(
        ValueError, match="vision encoder width 6 does not match the projector's input width 8"
    ):
        model(images, ids, mask)
    with pytest.raises(
        ValueError, match="batch sizes differ: visual_inputs has 3, input_ids has 2"
    ):
        onehot_model(lm_config)(cells.repeat(2, 1)[:3], ids, mask)


def manual_greedy(model: GridVLM, visual: torch.Tensor, ids: torch.Tensor, steps: int):
    """Greedy decoding by recomputing the full forward pass for every new token."""
    new = []
    with torch.no_grad():
        for _ in range(steps):
            token = model(visual, ids).logits[:, -1].argmax(-1, keepdim=True)
            new.append(token)
            ids = torch.cat([ids, token], dim=1)
    new = torch.cat(new, dim=1)
    eos = model.eos_token_id
    after_eos = (new == eos).long().cumsum(1) - (new == eos).long() > 0
    return new.masked_fill(after_eos, model.pad_token_id)


@pytest.mark.parametrize("kind", ["onehot", "vit"])
def test_generate_answers_equals_manual_greedy(kind, lm_config, tok, grids):
    model = onehot_model(lm_config) if kind == "onehot" else vit_model(lm_config).eval()
    torch.manual_seed(3)
    for row in range(2):
        cells, prompt = torch.tensor([grids[row][0]]), tok(grids[row][1], return_tensors="pt")
        visual = cells if kind == "onehot" else torch.randn(1, 3, 32, 32)
        fast = model.generate_answers(visual, prompt["input_ids"], prompt["attention_mask"], 6)
        slow = manual_greedy(model, visual, prompt["input_ids"], 6)
        assert fast.shape == (1, 6)
        assert torch.equal(fast, slow)
        assert len(set(fast[0].tolist())) > 1  # not a trivial (constant) answer


def test_batched_left_padded_generation_equals_one_by_one(lm_config, tok, grids):
    model = onehot_model(lm_config)
    # prompts of different lengths: cut 0, 3 and 7 tokens from the front
    prompts = [tok(g[1])["input_ids"][cut:] for g, cut in zip(grids[:3], (0, 3, 7), strict=True)]
    cells = torch.tensor([g[0] for g in grids[:3]])
    one_by_one = torch.cat(
        [
            model.generate_answers(cells[i : i + 1], torch.tensor([p]), None, 5)
            for i, p in enumerate(prompts)
        ]
    )
    assert len({tuple(row) for row in one_by_one.tolist()}) > 1
    for side in ("right", "left"):
        tok.padding_side = side
        try:
            batch = tok.pad({"input_ids": prompts}, return_tensors="pt")
        finally:
            tok.padding_side = "right"
        assert (batch["attention_mask"] == 0).any()
        answers = model.generate_answers(cells, batch["input_ids"], batch["attention_mask"], 5)
        assert torch.equal(answers, one_by_one), side


def test_freezing_keeps_frozen_parameters_fixed(lm_config, tok, grids):
    model = vit_model(lm_config, freeze_lm=True, freeze_vision=True).train()
    groups = model.param_groups_by_component()
    assert groups["lm"] == [] and groups["vision"] == [] and groups["projector"]
    every = model.param_groups_by_component(trainable_only=False)
    assert len(every["lm"]) == len(list(model.lm.parameters())) > 0
    optimizer = torch.optim.AdamW(
        [
            {"params": every[name], "lr": lr}
            for name, lr in (("lm", 1e-2), ("vision", 1e-2), ("projector", 1e-2))
        ]
    )
    _, ids, mask, labels = text_batch(tok, grids, 2)
    images = torch.randn(2, 3, 32, 32)

    def step():
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        optimizer.zero_grad()
        model(images, ids, mask, labels=labels).loss.backward()
        optimizer.step()
        return {
            name: any(
                not torch.equal(before[f"{name}.{k}"], v)
                for k, v in getattr(model, name).state_dict().items()
            )
            for name in ("lm", "vision", "projector")
        }

    assert step() == {"lm": False, "vision": False, "projector": True}
    model.set_frozen(lm=False)
    assert model.config.freeze_lm is False and model.param_groups_by_component()["lm"]
    assert step() == {"lm": True, "vision": False, "projector": True}


def test_save_and_load_roundtrip(lm_config, tok, grids, tmp_path):
    model = vit_model(lm_config, freeze_vision=True).eval()
    images = torch.randn(2, 3, 32, 32)
    _, ids, mask, labels = text_batch(tok, grids, 2)
    model.save_pretrained(tmp_path / "vlm")
    for name in ("config.json", "vision.safetensors", "projector.safetensors", "lm/config.json"):
        assert (tmp_path / "vlm" / name).is_file()
    loaded = GridVLM.from_pretrained(tmp_path / "vlm")
    assert loaded.config == model.config and not loaded.training
    assert not any(p.requires_grad for p in loaded.vision.parameters())
    with torch.no_grad():
        a, b = model(images, ids, mask, labels), loaded(images, ids, mask, labels)
    torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=0)
    torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=0)
    prompt = tok(grids[0][1], return_tensors="pt")
    assert torch.equal(
        loaded.generate_answers(images[:1], prompt["input_ids"]),
        model.generate_answers(images[:1], prompt["input_ids"]),
    )

    # a custom encoder: given back at load time, and it must have the saved width
    custom = GridVLM(
        VLMConfig(encoder="custom", projector="linear"), random_lm(lm_config), QuadrantEncoder(8)
    )
    custom.save_pretrained(tmp_path / "custom")
    with pytest.raises(ValueError, match="custom vision encoder"):
        GridVLM.from_pretrained(tmp_path / "custom")
    with pytest.raises(ValueError, match="has width 8, but the vision encoder has width 12"):
        GridVLM.from_pretrained(tmp_path / "custom", vision=QuadrantEncoder(12))
    reloaded = GridVLM.from_pretrained(tmp_path / "custom", vision=QuadrantEncoder(8))
    small = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(small, ids, mask).logits, custom.eval()(small, ids, mask).logits
        )
