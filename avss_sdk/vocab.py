"""The open vocabulary: prompt templates shared by training, export and runtime.

A category is embedded as the L2-normalised mean of its prompt-ensemble embeddings
(OV-AVSS); the scene description is SSP's second prompt, one template.

Words and scene texts are checked here, once: :func:`clean_vocabulary` returns
:class:`Words`, which every later step (the segmenter, the stream's background worker)
takes as already checked.
"""

from __future__ import annotations

import unicodedata
import warnings
from typing import Sequence

import numpy as np

from avss_sdk.errors import AvssError

MAX_WORD_CHARS = 200
MAX_SCENE_CHARS = 1000

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


class VocabularyError(AvssError, ValueError):
    """A vocabulary or scene text that cannot be used (empty, not strings, blank words, too large)."""


class Words(list):
    """A vocabulary :func:`clean_vocabulary` has checked: stripped, NFC, no duplicates."""


def _clean_text(text: str, what: str) -> str:
    """``text`` with whitespace collapsed and NFC-normalised; VocabularyError if it is not usable text."""
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            raise VocabularyError(f"{what} holds a lone surrogate (U+{ord(char):04X}), which is not text")
        if category == "Cc" and not char.isspace():
            raise VocabularyError(f"{what} holds the control character U+{ord(char):04X}")
    text = unicodedata.normalize("NFC", " ".join(text.split()))
    if not any(unicodedata.category(char)[0] not in "CZ" for char in text):
        raise VocabularyError(f"{what} is blank (no visible characters)")
    return text


def clean_vocabulary(words: Sequence[str], max_words: int | None = None) -> Words:
    """Checked words: stripped, NFC-normalised, duplicates (case-insensitive) dropped with a warning.

    Raises :class:`VocabularyError` for a vocabulary that is empty, not a list of strings,
    contains blank, invisible, non-text or absurdly long words, or has more than
    ``max_words`` words. A :class:`Words` passes through unchanged (it was checked already);
    only its size is checked against ``max_words``.
    """
    if isinstance(words, Words):
        check_vocab_size(words, max_words)
        return words
    if words is None:
        raise VocabularyError("no vocabulary given: pass the words to look for, e.g. vocab=['dog', 'guitar']")
    if isinstance(words, str):
        suggestion = [word.strip() for word in words.split(",") if word.strip()]
        raise VocabularyError(f"vocab must be a list of words, not one string; did you mean {suggestion!r}?")
    if isinstance(words, np.ndarray):
        if words.ndim != 1 or words.dtype.kind not in "UO":
            raise VocabularyError(f"vocab must be a list of words, got an array of {words.dtype} {words.shape}")
        words = words.tolist()
    try:
        words = list(words)
    except TypeError:
        raise VocabularyError(f"vocab must be a list of words, got {type(words).__name__}") from None
    if not words:
        raise VocabularyError("the vocabulary is empty: give at least one word, e.g. vocab=['dog', 'guitar']")
    cleaned, seen, duplicates = Words(), set(), []
    for i, word in enumerate(words):
        if not isinstance(word, str):
            raise VocabularyError(f"vocabulary word {i} is a {type(word).__name__}, not a string: {word!r}")
        word = _clean_text(word, f"vocabulary word {i}")
        if len(word) > MAX_WORD_CHARS:
            raise VocabularyError(f"vocabulary word {i} is {len(word)} characters long (at most {MAX_WORD_CHARS})")
        if word.casefold() in seen:
            duplicates.append(word)
            continue
        seen.add(word.casefold())
        cleaned.append(word)
    if duplicates:
        warnings.warn(f"duplicate vocabulary words ignored: {duplicates}", stacklevel=3)
    check_vocab_size(cleaned, max_words)
    return cleaned


def check_vocab_size(words: Sequence[str], max_words: int | None) -> None:
    """VocabularyError when ``words`` has more than ``max_words`` (None: no limit) words."""
    if max_words is not None and len(words) > max_words:
        raise VocabularyError(f"{len(words)} words, but these engines accept at most {max_words} "
                              f"(rebuild with avss-build-engines --max-vocab N)")


def clean_scene(text: str | None) -> str | None:
    """A checked scene description, or None for none (None, empty or only whitespace)."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise VocabularyError(f"scene must be a string or None, got {type(text).__name__}")
    if not text.strip():
        return None
    text = _clean_text(text, "the scene text")
    if len(text) > MAX_SCENE_CHARS:
        raise VocabularyError(f"the scene text is {len(text)} characters long (at most {MAX_SCENE_CHARS})")
    return text
