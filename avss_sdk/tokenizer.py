"""CLIP tokenization without torch: exactly what open_clip's ``SimpleTokenizer`` gives.

``ClipTokenizer.from_file("tokenizer.json")(["a photo of a dog.", ...])`` returns an int64 array
``[N, context_length]``: ``<start_of_text>``, the BPE ids, ``<end_of_text>``, zeros after. A text
too long keeps its first ``context_length - 2`` ids and still ends with ``<end_of_text>``
(open_clip's rule). The file comes from ``avss_sdk.export.tokenizer_json``; it is a standard
``tokenizers`` file holding open_clip's vocabulary, merges, pre-tokenization regex, SOT/EOT
template, truncation and padding (see that module for the field-by-field mapping).

Cleaning happens here, in Python, because ``tokenizers`` normalizers cannot express it.
open_clip cleans every text with ``whitespace_clean(basic_clean(text)).lower()``:
``ftfy.fix_text``, ``html.unescape`` twice, strip, collapse whitespace runs to one space,
``str.lower``. With ftfy installed this module calls the same ``ftfy.fix_text``, and the
output is identical to open_clip's. ftfy is not a runtime dependency; without it a
stdlib re-implementation of ftfy's default fixes is used (``_fix_text_without_ftfy``), which
agrees with ftfy except that it does not repair mojibake (text decoded with the wrong
codec, such as "cafÃ©" for "café"), which ftfy guesses heuristically.

One known difference remains even with ftfy: open_clip pre-tokenizes with the ``regex``
module, tokenizers with Oniguruma, whose Unicode tables are older. About 4,650 code points
assigned after Unicode 14 (recent CJK extensions and scripts) are letters or numbers to the
first and not to the second, so a text holding them can split differently.

Imports numpy, tokenizers and the standard library only.
"""

from __future__ import annotations

import html
import html.entities
import json
import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from avss_sdk.errors import AvssError, MissingFileError

log = logging.getLogger(__name__)

SOT, EOT = "<start_of_text>", "<end_of_text>"


class TokenizerFileError(AvssError, ValueError):
    """The tokenizer file is unreadable, corrupt or not a CLIP tokenizer written by avss_sdk.export.tokenizer_json."""


class ClipTokenizer:
    """open_clip's CLIP tokenizer from a ``tokenizer.json``; call it on a list of strings."""

    def __init__(self, tokenizer: Tokenizer, fix_text: Callable[[str], str] | None = None) -> None:
        self._tokenizer = tokenizer
        self.context_length, self.sot_id, self.eot_id = _check_clip_tokenizer(tokenizer)
        # The slow path (texts containing a special token's text) uses the model and
        # pre-tokenizer directly, with no truncation or padding.
        self._pre_tokenizer = tokenizer.pre_tokenizer
        self._model = tokenizer.model
        if fix_text is None:
            fix_text, self.uses_ftfy = _default_fix_text()
        else:
            self.uses_ftfy = False
        self._fix_text = fix_text

    @classmethod
    def from_file(cls, path: str | Path) -> ClipTokenizer:
        """Load ``path``; FileNotFoundError if it is missing, TokenizerFileError if it is not a valid CLIP tokenizer."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(
                f"tokenizer file not found: {path} (write it with: python -m avss_sdk.export.tokenizer_json --out {path})"
            )
        try:
            text = path.read_text(encoding="utf-8")
            json.loads(text)  # a clearer message for a truncated or corrupt file than tokenizers gives
            tokenizer = Tokenizer.from_str(text)
        except Exception as error:  # OSError, UnicodeDecodeError, JSONDecodeError, tokenizers' Exception
            raise TokenizerFileError(f"corrupt or unreadable tokenizer file {path}: {error}") from error
        try:
            return cls(tokenizer)
        except TokenizerFileError as error:
            raise TokenizerFileError(f"{path}: {error}") from None

    def __call__(self, texts: list[str]) -> np.ndarray:
        """int64 ``[len(texts), context_length]`` token ids, as ``open_clip.get_tokenizer(...)(texts)``."""
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"ClipTokenizer expects a list of strings, got {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"ClipTokenizer expects a list of strings; item {i} is {type(text).__name__}")
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        if not texts:
            return out
        cleaned = [self.clean(text) for text in texts]
        # A cleaned text never contains SOT/EOT's text in practice, and then tokenizers' own
        # encode_batch (template, truncation, padding) is exact. When it does, open_clip's regex
        # decides whether that text is the special token or ordinary punctuation and letters
        # (it is not the special token when glued to preceding punctuation, as in "(<end_of_text>"),
        # whereas tokenizers always extracts added tokens first; those texts go the slow path.
        fast = [i for i, text in enumerate(cleaned) if SOT not in text and EOT not in text]
        if fast:
            encodings = self._tokenizer.encode_batch([cleaned[i] for i in fast])
            out[fast] = np.array([e.ids for e in encodings], dtype=np.int64)
        for i in sorted(set(range(len(texts))) - set(fast)):
            out[i] = self._assemble(self._encode_ids(cleaned[i]))
        return out

    def clean(self, text: str) -> str:
        """open_clip's ``_clean_lower``: ftfy, ``html.unescape`` twice, whitespace collapse, lowercase."""
        text = self._fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        text = " ".join(text.split()).strip().lower()
        # U+0345 (combining ypogegrammeni) matches no branch of open_clip's case-insensitive
        # regex (it case-folds to a letter, so the regex module keeps it out of the "neither
        # letter nor number" class, yet it is no letter), so like a space it only separates
        # words there; tokenizers' regex would count it a letter.
        return text.replace("\u0345", " ")

    def _encode_ids(self, cleaned: str) -> list[int]:
        """BPE ids of one cleaned text, pre-tokenized by open_clip's regex alone (no added-token pass)."""
        specials = {SOT: self.sot_id, EOT: self.eot_id}
        ids: list[int] = []
        for piece, _ in self._pre_tokenizer.pre_tokenize_str(cleaned):
            if piece in specials:  # byte-level leaves these ASCII strings as they are
                ids.append(specials[piece])
            else:
                ids.extend(token.id for token in self._model.tokenize(piece))
        return ids

    def _assemble(self, ids: list[int]) -> np.ndarray:
        """open_clip's layout: [SOT] + ids + [EOT], cut to context_length with EOT last, zero padded."""
        row = np.zeros(self.context_length, dtype=np.int64)
        tokens = [self.sot_id, *ids[: self.context_length - 2], self.eot_id]
        row[: len(tokens)] = tokens
        return row

    def decode(self, ids) -> str:
        """Text of one row of ids, special tokens and padding dropped (for debugging)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if self.eot_id in ids:
            ids = ids[: ids.index(self.eot_id)]  # the padding after it is id 0, the token "!"
        return self._tokenizer.decode([i for i in ids if i != self.sot_id])


def _check_clip_tokenizer(tokenizer: Tokenizer) -> tuple[int, int, int]:
    """context_length, SOT id and EOT id, after checking the file is the exporter's CLIP tokenizer."""
    data = json.loads(tokenizer.to_str())
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("end_of_word_suffix") != "</w>":
        raise TokenizerFileError("not a CLIP tokenizer: expected a BPE model with the '</w>' end-of-word suffix")
    sot_id, eot_id = tokenizer.token_to_id(SOT), tokenizer.token_to_id(EOT)
    if sot_id is None or eot_id is None:
        raise TokenizerFileError(f"not a CLIP tokenizer: no {SOT} / {EOT} tokens")
    if data.get("normalizer") is not None:
        raise TokenizerFileError("unexpected normalizer: the CLIP tokenizer file must leave cleaning to ClipTokenizer")
    post = data.get("post_processor") or {}
    template = [next(iter(item.values())).get("id") for item in post.get("single", [])]
    if post.get("type") != "TemplateProcessing" or template != [SOT, "A", EOT]:
        raise TokenizerFileError(f"not a CLIP tokenizer: the post-processor must be '{SOT} $A {EOT}'")
    truncation, padding = tokenizer.truncation, tokenizer.padding
    if not truncation or not padding:
        raise TokenizerFileError("no truncation / padding settings: the context length is unknown")
    context_length = truncation["max_length"]
    if (
        padding.get("length") != context_length
        or padding.get("pad_id") != 0
        or truncation.get("direction") != "right"
        or padding.get("direction") != "right"
    ):
        raise TokenizerFileError(
            f"truncation {truncation} and padding {padding} are not CLIP's (right side, fixed length, pad id 0)"
        )
    if context_length < 2:
        raise TokenizerFileError(f"context length {context_length} leaves no room for {SOT} and {EOT}")
    return context_length, sot_id, eot_id


def _default_fix_text() -> tuple[Callable[[str], str], bool]:
    try:
        import ftfy
    except ImportError:
        log.info(
            "ftfy is not installed: CLIP text cleaning uses a stdlib equivalent of ftfy.fix_text, "
            "which does not repair mojibake (pip install ftfy for open_clip's exact cleaning)"
        )
        return _fix_text_without_ftfy, False
    return ftfy.fix_text, True


# --- ftfy.fix_text's default fixes, without ftfy -----------------------------------------------
# Written from ftfy 6's documented behaviour (TextFixerConfig defaults), minus fix_encoding's
# mojibake detection: per line, repeat until nothing changes: HTML entities ("auto": never once
# a line containing "<" has been seen), C1 controls as Windows-1252, Latin ligatures,
# full/half-width forms, curly quotes, line breaks, surrogates, terminal escapes, control
# characters, then NFC.

_HTML_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")


def _build_entities() -> dict[str, str]:
    entities = {}
    for name, char in html.entities.html5.items():
        if not name.endswith(";"):
            continue  # only unambiguous, semicolon-terminated entities
        entities["&" + name] = char
        upper = "&" + name.upper()
        if name == name.lower() and html.unescape(upper) == upper:
            entities[upper] = char.upper()  # all-caps names ("&EACUTE;"), as ftfy decodes them
    return entities


_ENTITIES = _build_entities()


def _unescape_entity(match: re.Match[str]) -> str:
    text = match.group(0)
    if text in _ENTITIES:
        return _ENTITIES[text]
    if text.startswith("&#"):
        unescaped = html.unescape(text)
        return text if ";" in unescaped else unescaped
    return text


def _c1_as_windows_1252(match: re.Match[str]) -> str:
    char = match.group(0)
    try:
        return char.encode("latin-1").decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: undefined in cp1252, kept
        return char


def _compat_decomposition(char: str) -> str:
    fields = unicodedata.decomposition(char).split()
    return "".join(chr(int(code, 16)) for code in fields[1:])


_C1 = re.compile("[\x80-\x9f]")
# Latin ligatures and legacy digraphs, split one compatibility level ("ﬅ" -> "ſt", not "st").
_LIGATURES = {
    cp: _compat_decomposition(chr(cp))
    for cp in [0x132, 0x133, 0x149, *range(0x1C4, 0x1CD), *range(0x1F1, 0x1F4), *range(0xFB00, 0xFB07)]
}
_WIDTH = {0x3000: " "} | {
    cp: unicodedata.normalize("NFKC", chr(cp))
    for cp in range(0xFF01, 0xFFF0)
    if unicodedata.normalize("NFKC", chr(cp)) != chr(cp)
}
_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_TERMINAL_ESCAPE = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_CONTROL = dict.fromkeys(
    [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]
)


def _join_surrogates(match: re.Match[str]) -> str:
    high, low = match.group(0)
    return chr(0x10000 + (ord(high) - 0xD800) * 0x400 + (ord(low) - 0xDC00))


def _fix_segment(text: str, unescape: bool) -> str:
    while True:
        before = text
        if unescape:
            text = _HTML_ENTITY.sub(_unescape_entity, text)
        text = _C1.sub(_c1_as_windows_1252, text)
        text = text.translate(_LIGATURES).translate(_WIDTH)
        text = _SINGLE_QUOTES.sub("'", _DOUBLE_QUOTES.sub('"', text))
        text = (
            text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
            .replace("\u2029", "\n").replace("\u0085", "\n")
        )
        if _SURROGATE.search(text):
            text = _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_join_surrogates, text))
        text = _TERMINAL_ESCAPE.sub("", text).translate(_CONTROL)
        text = unicodedata.normalize("NFC", text)
        if text == before:
            return text


def _fix_text_without_ftfy(text: str) -> str:
    """``ftfy.fix_text(text)`` with its default settings, except for mojibake repair."""
    out, unescape = [], True
    # ftfy splits after each "\n" only (not at other line breaks), keeping it with its line.
    segments = re.findall(r"[^\n]*\n|[^\n]+$", text)
    for segment in segments:
        if "<" in segment:
            unescape = False  # ftfy's "auto": from here on, never (its config stays switched off)
        out.append(_fix_segment(segment, unescape))
    return "".join(out)
