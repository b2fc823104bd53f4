"""The open vocabulary: prompt templates shared by training, export and runtime.

A category is embedded as the L2-normalised mean of its prompt-ensemble embeddings
(OV-AVSS); the scene description is SSP's second prompt, one template.
"""

from __future__ import annotations

CATEGORY_TEMPLATES = (
    "a photo of a {}.",
    "a {} making a sound.",
    "the sound of a {}.",
    "a video of a {}.",
)
SCENE_TEMPLATE = "a scene with {}."


def category_prompts(name: str) -> list[str]:
    """The prompt ensemble of one category name."""
    return [template.format(name) for template in CATEGORY_TEMPLATES]


def scene_prompt(description: str) -> str:
    """The prompt of a scene description."""
    return SCENE_TEMPLATE.format(description.strip().rstrip("."))
