"""Build an SSP-OV model and read and write its checkpoints (as ``segment_anything``'s ``build_sam.py``).

A checkpoint is a ``torch.save`` archive of plain data: format and version, the
:class:`~avss_sdk.modeling.ssp_ov.ModelConfig` dict, the prompt templates the model was
trained with, the state dict, and what training adds (optimizer, step, ...). It is read with
``weights_only=True``: a file that holds anything else is refused unread. Writes are atomic.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from avss_sdk.errors import AvssError
from avss_sdk.fileio import write_atomic
from avss_sdk.modeling.ssp_ov import SSPOV, ModelConfig
from avss_sdk.vocab import CATEGORY_TEMPLATES, SCENE_TEMPLATE

CHECKPOINT_FORMAT = "avss_sdk.ssp_ov"
CHECKPOINT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "ssp_ov_default.pt"


class CheckpointError(AvssError, ValueError):
    """A file that is not an SSP-OV checkpoint, or one that does not match the model."""


def build_model(config: ModelConfig, prompts: dict[str, Any] | None = None) -> SSPOV:
    """An SSP-OV model of ``config``; ``prompts`` (a checkpoint's, see :func:`prompt_templates`)
    sets its prompt templates, the code's current ones otherwise."""
    prompts = prompts or {}
    return SSPOV(config, category_templates=prompts.get("category_templates", CATEGORY_TEMPLATES),
                 scene_template=prompts.get("scene_template", SCENE_TEMPLATE))


def prompt_templates(payload: dict[str, Any]) -> dict[str, Any]:
    """The prompt templates a checkpoint's model was trained with; for checkpoints written before
    they were stored, the code's current ones. Refuses malformed ones with a :class:`CheckpointError`."""
    prompts = payload.get("prompts")
    if prompts is None:
        return {"category_templates": list(CATEGORY_TEMPLATES), "scene_template": SCENE_TEMPLATE}
    categories = prompts.get("category_templates") if isinstance(prompts, dict) else None
    scene = prompts.get("scene_template") if isinstance(prompts, dict) else None
    if (not isinstance(categories, list) or not categories or not isinstance(scene, str)
            or not all(isinstance(t, str) and t.count("{}") == 1 for t in [*categories, scene])):
        raise CheckpointError("the checkpoint's prompt templates are malformed (a non-empty list of category "
                              "templates and a scene template, each with exactly one '{}')")
    return {"category_templates": list(categories), "scene_template": scene}


def save_checkpoint(path: str | os.PathLike, model: SSPOV, extra: dict[str, Any] | None = None,
                    half: bool = False) -> None:
    """Write ``model`` (and ``extra``: optimizer, step, ...) atomically: temp file, fsync, rename."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    prompts = {"category_templates": list(model.text_encoder.category_templates),
               "scene_template": model.text_encoder.scene_template}
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": dataclasses.asdict(model.config),
               "prompts": prompts, "model": state, **(extra or {})}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """"default" -> the shipped checkpoint; otherwise the path, which must exist."""
    resolved = DEFAULT_CHECKPOINT if str(path) == "default" else Path(path)
    if not resolved.is_file():
        hint = " (the package ships without its default model?)" if str(path) == "default" else ""
        raise FileNotFoundError(f"checkpoint not found: {resolved}{hint}")
    return resolved


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a checkpoint file; a clear :class:`CheckpointError` for anything else."""
    path = resolve_checkpoint(path)
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise CheckpointError(f"{path} is not a readable checkpoint: not a torch.save archive")
    try:
        # weights_only: a checkpoint is data. Unpickling arbitrary objects would let a file run code.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds Python objects beyond tensors and plain containers; it is refused "
                              f"unread because loading it could run code. Re-save it with only state dicts, "
                              f"numbers, strings, lists and dicts") from None
    except Exception as error:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path} is not a readable checkpoint: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an SSP-OV checkpoint (from another model or program?)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}, "
                              f"this avss_sdk reads version {CHECKPOINT_VERSION}")
    model = payload.get("model")
    if not isinstance(payload.get("config"), dict) or not isinstance(model, dict) \
            or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise CheckpointError(f"{path} is damaged: it needs a 'config' mapping and a 'model' state dict of tensors")
    return payload


def load_model(path: str | os.PathLike, **overrides: Any) -> tuple[SSPOV, dict[str, Any]]:
    """(model in eval mode with the checkpoint's weights in float32, the checkpoint payload)."""
    payload = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict({**payload["config"], "pretrained_backbone": False, **overrides})
        model = build_model(config, prompt_templates(payload))
    except (TypeError, ValueError, RuntimeError) as error:  # RuntimeError: torch refused a size
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path} holds a model config this code cannot build: {error}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path} does not match its model config: missing {result.missing_keys[:3]}, "
                              f"unexpected {result.unexpected_keys[:3]}")
    return model.eval(), payload
