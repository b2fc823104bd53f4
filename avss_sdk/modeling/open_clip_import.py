"""Import open_clip on machines whose torchvision cannot load its compiled ops.

open_clip imports torchvision. The only torchvision wheel for some torch builds is a
CUDA build whose compiled ops fail to load against a CPU torch; its Python import then
fails on the missing ``torchvision::nms`` / ``qnms`` operator schemas. Declaring those
two schemas (no kernels: open_clip never calls them) lets the rest of torchvision load.
On a healthy install the schemas already exist and nothing is declared.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None


def _declare_missing_torchvision_schemas() -> None:
    global _library
    missing = [name for name in _SCHEMAS if not _schema_exists(name)]
    if not missing:
        return
    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _library.define(_SCHEMAS[name])


def _schema_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def import_open_clip() -> ModuleType:
    """``import open_clip``, declaring torchvision's missing op schemas first if needed."""
    try:
        return importlib.import_module("open_clip")
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    _declare_missing_torchvision_schemas()
    for name in [m for m in sys.modules if m.startswith(("torchvision", "open_clip"))]:
        del sys.modules[name]  # half-imported modules from the failed attempt
    return importlib.import_module("open_clip")
