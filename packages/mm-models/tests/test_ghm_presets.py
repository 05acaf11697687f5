"""Paper configurations of the GHM models: widths, depths, modes; each builds and runs."""

import pytest
import torch

from mm_models.ghm import (
    GHM_TASKS,
    GHM_VARIANTS,
    GHMClipModel,
    GHMConditionalDenoiser,
    GHMNextWordModel,
    build_ghm_model,
    ghm_model_config,
)

PAPER = {  # task: (model class, d_model, standard depth, mode)
    "clip": (GHMClipModel, 128, 5, None),
    "dns": (GHMConditionalDenoiser, 128, 9, "joint"),
    "sdns": (GHMConditionalDenoiser, 128, 9, "sequential"),
    "nwp": (GHMNextWordModel, 256, 9, "joint"),
    "snwp": (GHMNextWordModel, 256, 9, "sequential"),
}


@pytest.mark.parametrize("variant", GHM_VARIANTS)
@pytest.mark.parametrize("task", GHM_TASKS)
def test_paper_config(task, variant):
    _, d, depth, mode = PAPER[task]
    cfg = ghm_model_config(task, variant)
    assert (cfg.vocab, cfg.n_leaves, cfg.d_model, cfg.n_head) == (10, 81, d, 1)
    assert cfg.n_layer == (1 if variant == "shallow" else depth)
    assert getattr(cfg, "text_mode", getattr(cfg, "image_mode", None)) == mode
    assert cfg.embed_dim == 10


@pytest.mark.parametrize("task", GHM_TASKS)
def test_shallow_paper_models_run(task):
    cls = PAPER[task][0]
    model = build_ghm_model(ghm_model_config(task, "shallow"))
    assert isinstance(model, cls)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, 10, (2, 81), generator=gen) for _ in range(2))
    emb = torch.randn(2, 10)
    if task == "clip":
        f_text, f_image = model(a, b)
        assert f_text.shape == f_image.shape == (2, 10)
    elif task == "dns":
        assert model(b.float(), a).shape == (2, 81)
    elif task == "sdns":
        assert model(b.float(), text_embedding=emb).shape == (2, 81)
    elif task == "nwp":
        assert model(a, b).shape == (2, 80, 10)
    else:
        assert model(a, image_embedding=emb).shape == (2, 80, 10)


def test_overrides_and_bad_names():
    cfg = ghm_model_config("clip", "standard", attention="relu", n_head=4)
    assert (cfg.attention, cfg.n_head, cfg.n_layer) == ("relu", 4, 5)
    with pytest.raises(ValueError, match="task"):
        ghm_model_config("vqa")
    with pytest.raises(ValueError, match="variant"):
        ghm_model_config("clip", "deep")
    with pytest.raises(ValueError, match="unknown field"):
        ghm_model_config("clip", n_heads=2)
    with pytest.raises(ValueError, match="n_head"):
        ghm_model_config("nwp", n_head=3)
    with pytest.raises(ValueError, match="evidence channels"):
        ghm_model_config("dns", vocab=200)
