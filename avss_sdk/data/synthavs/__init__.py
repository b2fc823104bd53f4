"""SynthAVS-OV: a procedural open-vocabulary audio-visual segmentation benchmark.

Categories are compositional (colour x shape); colour sets the pitch and shape the
timbre, so both the image and the sound identify a category, and a text encoder can
compose unseen (novel) names from words seen in base names. See ``writer.generate_clip``
for the one-call entry point and ``train/make_synth.py`` for the CLI.
"""

from avss_sdk.data.synthavs.categories import (
    BASE,
    CATEGORIES,
    NOVEL,
    Category,
    category_by_name,
    label2idx,
)
from avss_sdk.data.synthavs.flow_png import read_flow_png, write_flow_png
from avss_sdk.data.synthavs.render import RenderedClip, render_clip
from avss_sdk.data.synthavs.scene import Scene, SceneObject, sample_scene, scene_text
from avss_sdk.data.synthavs.sound import partials, synthesize_audio
from avss_sdk.data.synthavs.writer import clip_uid, generate_clip, write_dataset_files

__all__ = [
    "BASE",
    "CATEGORIES",
    "NOVEL",
    "Category",
    "RenderedClip",
    "Scene",
    "SceneObject",
    "category_by_name",
    "clip_uid",
    "generate_clip",
    "label2idx",
    "partials",
    "read_flow_png",
    "render_clip",
    "sample_scene",
    "scene_text",
    "synthesize_audio",
    "write_dataset_files",
    "write_flow_png",
]
