"""Stage ``text_encoder``: token ids -> one L2-normalised embedding per prompt.

An open_clip text tower with its tokenizer, created by ``open_clip.create_model`` in
every case: the shipped default is a small open_clip config (``configs/avss-text-tiny.json``)
trained here on SynthAVS text; a real CLIP is the same call with a model name such as
``ViT-B-32`` and its checkpoint file, so swapping it in is a config change.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from avss_sdk.modeling.open_clip_import import import_open_clip
from avss_sdk.vocab import CATEGORY_TEMPLATES, SCENE_TEMPLATE, category_prompts, scene_prompt

CONFIG_DIR = Path(__file__).with_name("configs")


def create_open_clip(model_name: str, checkpoint: str | None) -> nn.Module:
    """An open_clip model by name (configs shipped in ``configs/`` included), weights from ``checkpoint``."""
    open_clip = import_open_clip()
    open_clip.add_model_config(CONFIG_DIR)
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"CLIP checkpoint not found: {checkpoint}")
    if checkpoint is not None:
        return open_clip.create_model(model_name, pretrained=checkpoint)
    # Without a checkpoint open_clip warns "initialized randomly", which misleads when the
    # weights come next from an SSP-OV checkpoint; the caller knows what it asked for.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model(model_name, pretrained=None)
    finally:
        logging.disable(previous)


class TextEncoder(nn.Module):
    """forward(token_ids [N, L] int64) -> [N, D] unit vectors. Holds the learned "no scene text" embedding."""

    def __init__(self, *, clip: nn.Module, model_name: str, category_templates: Sequence[str] = CATEGORY_TEMPLATES,
                 scene_template: str = SCENE_TEMPLATE) -> None:
        super().__init__()
        # The prompt templates the model is trained with: saved in its checkpoint and its export's manifest.
        self.category_templates = tuple(category_templates)
        self.scene_template = scene_template
        self.clip = clip
        self.clip.visual = nn.Identity()  # the image tower, if used, belongs to the image encoder
        self.model_name = model_name
        self.context_length = int(clip.context_length)
        self.embed_dim = int(clip.text_projection.shape[1])
        self.no_scene = nn.Parameter(F.normalize(torch.randn(self.embed_dim), dim=0))
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = import_open_clip().get_tokenizer(self.model_name, context_length=self.context_length)
        return self._tokenizer

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.no_scene.device)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(token_ids), dim=-1)

    def embed_categories(self, names: list[str]) -> torch.Tensor:
        """[K, D]: per category, the normalised mean of its prompt-ensemble embeddings."""
        prompts = [p for name in names for p in category_prompts(name, self.category_templates)]
        emb = self(self.tokenize(prompts)).view(len(names), -1, self.embed_dim)
        return F.normalize(emb.mean(dim=1), dim=-1)

    def embed_scenes(self, descriptions: list[str | None]) -> torch.Tensor:
        """[B, D]: each scene description's embedding, or the learned "no scene text" embedding for None."""
        given = [i for i, d in enumerate(descriptions) if d]
        out = F.normalize(self.no_scene, dim=0).expand(len(descriptions), -1)
        if not given:
            return out
        emb = self(self.tokenize([scene_prompt(descriptions[i], self.scene_template) for i in given]))
        index = torch.tensor(given, device=emb.device)
        return out.index_copy(0, index, emb)
