"""Write open_clip's CLIP tokenizer as a Hugging Face ``tokenizer.json`` for the torch-free runtime.

``python -m avss_sdk.export.tokenizer_json --model avss-text-tiny --out tokenizer.json``

open_clip tokenizes with ``SimpleTokenizer`` (``open_clip/tokenizer.py``). This module builds a
``tokenizers.Tokenizer`` that reproduces it, with the vocabulary and merges taken from the
loaded ``SimpleTokenizer`` object itself (never re-typed), and everything the runtime needs
held in the file's standard fields, so the file stays loadable by ``tokenizers`` alone:

* model: byte-level BPE with the ``</w>`` end-of-word suffix, open_clip's vocabulary (49,408
  ids) and its merges in rank order.
* pre_tokenizer: open_clip's own pre-tokenization regex (``SimpleTokenizer.pat``, made
  case-insensitive with ``(?i)`` as open_clip compiles it with ``re.IGNORECASE``), keeping the
  matches, then the byte-to-unicode mapping (``ByteLevel`` without its GPT-2 regex; the same
  table as open_clip's ``bytes_to_unicode``).
* post_processor: ``<start_of_text> $A <end_of_text>`` with their ids (SOT 49406, EOT 49407).
* truncation: ``max_length = context_length``, right side. ``tokenizers`` reserves the two
  special tokens, so the text keeps its first ``context_length - 2`` ids and still ends with
  EOT: exactly open_clip's rule (cut ``[SOT] + ids + [EOT]`` to ``context_length``, then set
  the last id to EOT).
* padding: fixed length ``context_length`` with id 0, as open_clip's zero-filled tensor.
* normalizer: none. open_clip's cleaning (``ftfy.fix_text``, ``html.unescape`` twice, whitespace
  collapse, ``str.lower``) cannot be expressed by ``tokenizers`` normalizers (ftfy, HTML
  entities), and a partial one would not be exact either (an NFC normalizer would recompose
  what ``html.unescape`` decoded after ftfy's NFC). ``avss_sdk.tokenizer.ClipTokenizer`` does
  that cleaning in Python; the file tokenizes already-cleaned text. Loaded by ``tokenizers``
  alone, it gives open_clip's ids for text that is already clean (lowercase, single spaces),
  save two rare cases that ClipTokenizer handles itself (see its comments).

Only what this reproduces exactly is accepted: a ``SimpleTokenizer`` with open_clip's default
``clean='lower'``, no ``reduction_mask`` (those are random) and no additional special tokens.
This file imports open_clip (export time only).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from avss_sdk.fileio import write_text_atomic

SOT, EOT = "<start_of_text>", "<end_of_text>"
END_OF_WORD = "</w>"


def load_open_clip_tokenizer(model_name: str, context_length: int | None = None):
    """open_clip's tokenizer for ``model_name`` (this repository's configs included), as the text encoder gets it."""
    from avss_sdk.modeling.open_clip_import import import_open_clip
    from avss_sdk.modeling.text_encoder import CONFIG_DIR

    open_clip = import_open_clip()
    open_clip.add_model_config(CONFIG_DIR)
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r} (not a built-in config nor one in {CONFIG_DIR})")
    return open_clip.get_tokenizer(model_name, context_length=context_length)


def build_tokenizer(simple_tokenizer) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equal to open_clip's ``SimpleTokenizer`` on text it has already cleaned."""
    st = simple_tokenizer
    if type(st).__name__ != "SimpleTokenizer" or not hasattr(st, "bpe_ranks"):
        raise ValueError(
            f"{type(st).__name__} is not open_clip's SimpleTokenizer; only CLIP's BPE tokenizer is exported"
        )
    if getattr(st, "reduction_fn", None) is not None:
        raise ValueError("open_clip tokenizers with a reduction_mask (random token dropping) are not supported")
    clean = getattr(st.clean_fn, "__name__", "")
    if clean != "_clean_lower":
        raise ValueError(f"only open_clip's default clean='lower' is supported, not {clean!r}")
    specials = [st.decoder[i] for i in st.all_special_ids]
    if specials != [SOT, EOT]:
        raise ValueError(f"expected special tokens {[SOT, EOT]}, got {specials}")
    context_length = st.context_length
    if not isinstance(context_length, int) or context_length < 2:
        raise ValueError(f"context_length must be an int >= 2 (room for SOT and EOT), got {context_length!r}")

    vocab = dict(st.encoder)
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError("open_clip's vocabulary ids are not contiguous")
    merges = [pair for pair, _ in sorted(st.bpe_ranks.items(), key=lambda item: item[1])]
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, end_of_word_suffix=END_OF_WORD, unk_token=None)
    )
    # open_clip compiles ``pat`` with re.IGNORECASE; (?i) is the same flag for tokenizers' regex.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("(?i)" + st.pat.pattern), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (SOT, EOT)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}",
        special_tokens=[(SOT, st.sot_token_id), (EOT, st.eot_token_id)],
    )
    tokenizer.enable_truncation(max_length=context_length, strategy="longest_first", direction="right")
    # open_clip pads with id 0 (which is the token "!"; CLIP reads its output at the EOT, not the padding).
    tokenizer.enable_padding(direction="right", pad_id=0, pad_token=st.decoder[0], length=context_length)
    # Decoding (debugging only): bytes back to text, "</w>" back to a space, as SimpleTokenizer.decode.
    tokenizer.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace(END_OF_WORD, " ")])
    return tokenizer


def write_tokenizer_json(model_name: str, path: str | os.PathLike, context_length: int | None = None) -> Path:
    """Write ``model_name``'s open_clip tokenizer to ``path`` (atomically) as a ``tokenizers`` JSON file.

    ``context_length`` defaults to the model config's (40 for avss-text-tiny, 77 for CLIP).
    """
    tokenizer = build_tokenizer(load_open_clip_tokenizer(model_name, context_length))
    return write_text_atomic(path, tokenizer.to_str(pretty=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write an open_clip model's CLIP tokenizer as a tokenizer.json that "
        "avss_sdk.tokenizer.ClipTokenizer reads without torch."
    )
    parser.add_argument("--model", default="avss-text-tiny", help="open_clip model name (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output file, e.g. DIR/tokenizer.json")
    parser.add_argument(
        "--context-length", type=int, default=None,
        help="tokens per text, SOT and EOT included (default: the model config's)",
    )
    args = parser.parse_args(argv)
    try:
        out = write_tokenizer_json(args.model, args.out, args.context_length)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tok = Tokenizer.from_file(str(out))
    print(f"wrote {out} ({args.model}, context length {tok.truncation['max_length']}, vocab {tok.get_vocab_size()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
