"""avss_sdk: open-vocabulary audio-visual semantic segmentation at the edge.

    import avss_sdk
    for result in avss_sdk.Stream(camera=0, mic=0, vocab=["dog", "guitar", "person speaking"]):
        ...

The runtime part of this package (everything outside ``avss_sdk.modeling`` and
``avss_sdk.training``) needs no torch. ``Stream`` and ``Segmenter`` are imported on first
use, so ``import avss_sdk`` stays light for training code.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AvssError", "Segmenter", "RemoteSegmenter", "Stream", "Result", "SoundingObject", "VocabularyError"]

_EXPORTS = {"AvssError": "avss_sdk.errors", "Segmenter": "avss_sdk.segmenter", "VocabularyError": "avss_sdk.segmenter",
            "RemoteSegmenter": "avss_sdk.remote",
            "Stream": "avss_sdk.stream", "Result": "avss_sdk.result", "SoundingObject": "avss_sdk.result"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'avss_sdk' has no attribute {name!r}")
