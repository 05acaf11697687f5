"""Image-caption data for CLIP training: the ALBEF-style formats, transforms, templates,
a synthetic shapes corpus and WebDataset shards (``webdataset`` is imported on first use).
"""

from __future__ import annotations

from mm_data.imagetext.captions import preprocess_caption
from mm_data.imagetext.formats import (
    CLASSNAMES_FILE,
    ImageCaptionDataset,
    RetrievalEvalDataset,
    ZeroShotFolder,
    load_image,
    read_annotations,
)
from mm_data.imagetext.synthetic import (
    BACKGROUNDS,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    SyntheticCorpus,
    caption_scene,
    hard_negative,
    render_scene,
    sample_scene,
    scene_captions,
    write_synthetic_corpus,
)
from mm_data.imagetext.templates import IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, class_prompts
from mm_data.imagetext.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    train_transform,
    zeroshot_transform,
)
from mm_data.imagetext.webdataset_shards import (
    shard_name,
    webdataset_captions,
    webdataset_pipeline,
    write_webdataset_shards,
)

__all__ = [
    "BACKGROUNDS",
    "CLASSNAMES_FILE",
    "CLIP_MEAN",
    "CLIP_STD",
    "COLORS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENET_TEMPLATES",
    "POSITIONS",
    "SHAPES",
    "SIMPLE_TEMPLATES",
    "SIZES",
    "ImageCaptionDataset",
    "RetrievalEvalDataset",
    "Scene",
    "SceneObject",
    "SyntheticCorpus",
    "ZeroShotFolder",
    "caption_scene",
    "class_prompts",
    "eval_transform",
    "hard_negative",
    "load_image",
    "preprocess_caption",
    "read_annotations",
    "render_scene",
    "sample_scene",
    "scene_captions",
    "shard_name",
    "train_transform",
    "webdataset_captions",
    "webdataset_pipeline",
    "write_synthetic_corpus",
    "write_webdataset_shards",
    "zeroshot_transform",
]
