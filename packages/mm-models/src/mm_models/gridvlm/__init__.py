"""GPT-2 on text grids and its LLaVA-style vision-language version ("GPT-2v"), offline.

Everything is built from configs (nothing is downloaded):

- `train_bpe_tokenizer(texts, vocab_size, out_dir=None)`: byte-level BPE, ``<|endoftext|>``
  (id 0) as bos/eos/pad;
- `LMConfig`, `build_lm(cfg)`: a randomly initialised `GPTJForCausalLM` (or `GPT2LMHeadModel`);
- vision encoders (``width``, ``num_tokens``, ``forward(x) -> [B, num_tokens, width]``):
  `TimmTokenEncoder` (timm forward_features as tokens; `TimmTokenEncoder.from_dual_encoder`
  for a CLIP image tower) and `OneHotCellEncoder` (one one-hot token per grid cell);
- `Projector` ("linear" or "mlp") and `GridVLM` (`VLMConfig`): image tokens before the text,
  loss on text labels only, greedy `generate_answers`, per-component freezing and parameter
  groups, `save_pretrained`/`from_pretrained`.

    tok = train_bpe_tokenizer(texts, vocab_size=512)
    lm = build_lm(LMConfig.from_tokenizer(tok, n_positions=256))
    vision = TimmTokenEncoder("vit_tiny_patch16_224", 54, patch_size=9, depth=4, embed_dim=128,
                              num_heads=4)  # 6 x 6 = 36 tokens of width 128
    model = GridVLM(VLMConfig(**vision.config_fields(), projector="linear"), lm, vision)
    loss = model(images, ids, mask, labels).loss
    answers = model.generate_answers(images, prompt_ids, prompt_mask, max_new_tokens=5)
"""

from mm_models.gridvlm.lm import LMConfig, build_lm
from mm_models.gridvlm.model import ENCODER_KINDS, GridVLM, VLMConfig, build_vision_encoder
from mm_models.gridvlm.tokenizer import ENDOFTEXT, train_bpe_tokenizer
from mm_models.gridvlm.vision import (
    DEFAULT_VIT,
    PROJECTOR_KINDS,
    OneHotCellEncoder,
    Projector,
    TimmTokenEncoder,
)

__all__ = [
    "DEFAULT_VIT",
    "ENCODER_KINDS",
    "ENDOFTEXT",
    "PROJECTOR_KINDS",
    "GridVLM",
    "LMConfig",
    "OneHotCellEncoder",
    "Projector",
    "TimmTokenEncoder",
    "VLMConfig",
    "build_lm",
    "build_vision_encoder",
    "train_bpe_tokenizer",
]
