"""The open vocabulary: prompt templates shared by training, export and runtime.

A category is embedded as the L2-normalised mean of its prompt-ensemble embeddings
(OV-AVSS); the scene description is SSP's second prompt, one template.
"""

from __future__ import annotations

from typing import Sequence

CATEGORY_TEMPLATES = (
    "a photo of a {}.",
    "a {} making a sound.",
    "the sound of a {}.",
    "a video of a {}.",
)
SCENE_TEMPLATE = "a scene with {}."


def category_prompts(name: str, templates: Sequence[str] = CATEGORY_TEMPLATES) -> list[str]:
    """The prompt ensemble of one category name (``templates``: a model's own, from its manifest)."""
    return [template.format(name) for template in templates]


def scene_prompt(description: str, template: str = SCENE_TEMPLATE) -> str:
    """The prompt of a scene description (``template``: a model's own, from its manifest)."""
    return template.format(description.strip().rstrip("."))
