"""The torch-free tokenizer (avss_sdk.tokenizer) against open_clip's own, through avss_sdk.export.tokenizer_json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avss_sdk.data.synthavs.categories import CATEGORIES
from avss_sdk.export import tokenizer_json
from avss_sdk.tokenizer import ClipTokenizer, TokenizerFileError, _fix_text_without_ftfy
from avss_sdk.vocab import category_prompts, scene_prompt

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"avss-text-tiny": 40, "ViT-B-32": 77}

LONG = (
    "A busy street market at dusk: a man plays an acoustic guitar next to a fruit stall, "
    "two dogs bark at a passing red scooter, a church bell rings in the distance, children "
    "laugh near a fountain, and a street vendor shouts prices for oranges, lemons and melons "
    "while a bus honks twice and pigeons take off from the square."
)
MOJIBAKE = "cafÃ© crÃ¨me"  # "café crème" decoded as Windows-1252: only ftfy repairs this

CORPUS = [
    *[c.name for c in CATEGORIES],
    *[p for c in CATEGORIES[:8] for p in category_prompts(c.name)],
    *[p for name in ("ambulance", "lawn mower", "acoustic guitar", "baby") for p in category_prompts(name)],
    "a photo of a red star.", "A PHOTO OF A Red Star.", "rED sTaR", scene_prompt("a street with traffic"),
    # beyond both context lengths, and every length around the truncation boundary of 40 and 77
    LONG, scene_prompt(LONG), (LONG + " ") * 3,
    *[" ".join(["dog"] * n) for n in (*range(36, 42), *range(73, 79))],
    "", " ", "\t\n  \r\n", "multiple   spaces\tand\ttabs\nand\r\nnewlines  ",
    "hello, world! (really?) ... --- ;: <>", "a.b,c!d?e", '"quoted" text', "***", "e-mail@example.com",
    "#hashtag", "snake_case_name", "C++ / C# & F#", "50% off: $9.99!",
    "123 4567 3.14159 1,000,000 2nd 21st 1990s", "½ ² Ⅻ ٣ ៣",
    "don't", "it's", "we're", "they've", "I'm", "you'll", "he'd", "DON'T IT'S", "rock 'n' roll",
    "dogs' toys", "don\u2019t stop", "“curly” ‘quotes’", "'ſ",
    "café", "naïve", "Zürich", "straße", "İstanbul", "日本語", "🎸", "a guitar 🎸 playing",
    "Ελληνικά ΟΔΟΣ", "Москва", "عربي", "हिन्दी", "한국어", "👨\u200d👩\u200d👧 family", "🇯🇵",
    "ﬁsh ﬂag ǅ", "ＦＵＬＬ\u3000ｗｉｄｔｈ", "e\u0301 decomposed", "a\u0345b", "ᾳ",
    "Tom &amp; Jerry", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp;amp;", "<b>tag</b> &amp;amp; more",
    "&quot;hi&quot;", "&#233;t&#xe9;", "AT&T", "fish &chips", "P&EACUTE;REZ", "x\n<\n&amp;amp;amp;",
    "bell\x07 char", "\ufeffbom", "\x1b[31mred\x1b[0m", "c1\x80\x85\x81", "lone \ud83c surrogate",
    "<start_of_text>", "<end_of_text>", "a<end_of_text>b", "(<end_of_text>)", "<<start_of_text>>",
    "<START_OF_TEXT> dog", "dog<end_of_text>" + " dog" * 80,
    MOJIBAKE,
]


@pytest.fixture(scope="module")
def open_clip_tokenizers():
    return {name: tokenizer_json.load_open_clip_tokenizer(name) for name in MODELS}


@pytest.fixture(scope="module")
def files(tmp_path_factory, open_clip_tokenizers):
    out = tmp_path_factory.mktemp("tokenizers")
    return {name: tokenizer_json.write_tokenizer_json(name, out / name / "tokenizer.json") for name in MODELS}


def _vocabulary_words(simple_tokenizer, n: int = 1000) -> list[str]:
    """n whole words of open_clip's vocabulary (its "</w>" entries), spread over the id range."""
    decode = simple_tokenizer.byte_decoder
    words = []
    for token, _ in sorted(simple_tokenizer.encoder.items(), key=lambda item: item[1]):
        if token.endswith("</w>"):
            try:
                words.append(bytes(decode[c] for c in token[:-4]).decode("utf-8"))
            except UnicodeDecodeError:
                continue
    return words[:: len(words) // n][:n]


@pytest.mark.parametrize("model", MODELS)
def test_tokenizes_exactly_as_open_clip(model, files, open_clip_tokenizers):
    reference = open_clip_tokenizers[model]
    tokenizer = ClipTokenizer.from_file(files[model])
    assert tokenizer.uses_ftfy  # ftfy is here (open_clip needs it): the exact cleaning
    assert tokenizer.context_length == reference.context_length == MODELS[model]
    assert (tokenizer.sot_id, tokenizer.eot_id) == (reference.sot_token_id, reference.eot_token_id)

    ids = tokenizer(CORPUS)
    expected = reference(CORPUS).numpy()
    assert ids.dtype == np.int64 and ids.shape == (len(CORPUS), MODELS[model])
    for text, got, want in zip(CORPUS, ids, expected):
        assert got.tolist() == want.tolist(), f"{text!r}"

    words = _vocabulary_words(reference)
    assert len(words) == 1000
    np.testing.assert_array_equal(tokenizer(words), reference(words).numpy())
    glued = [a + b for a, b in zip(words, reversed(words))]  # words outside the vocabulary: real merging
    np.testing.assert_array_equal(tokenizer(glued), reference(glued).numpy())


def test_truncation_keeps_eot_last_and_pads_with_zeros(files):
    tokenizer = ClipTokenizer.from_file(files["avss-text-tiny"])
    long, short = tokenizer([LONG, "a red star"])
    assert long[0] == tokenizer.sot_id and long[-1] == tokenizer.eot_id and 0 not in long
    assert short[:5].tolist() == [tokenizer.sot_id, *short[1:4], tokenizer.eot_id] and not short[5:].any()
    assert tokenizer.decode(short) == "a red star "


def test_slow_path_agrees_with_tokenizers_encode(files):
    """The per-piece path (used for texts holding a special token's text) equals encode_batch on the rest."""
    tokenizer = ClipTokenizer.from_file(files["avss-text-tiny"])
    plain = [t for t in CORPUS if "_of_text>" not in tokenizer.clean(t)]
    slow = np.stack([tokenizer._assemble(tokenizer._encode_ids(tokenizer.clean(t))) for t in plain])
    np.testing.assert_array_equal(slow, tokenizer(plain))


def test_stdlib_cleaning_without_ftfy(files, open_clip_tokenizers):
    """Without ftfy: identical except for mojibake repair, the one ftfy fix not re-implemented."""
    import ftfy

    no_mojibake_repair = ftfy.TextFixerConfig(
        fix_encoding=False, restore_byte_a0=False, replace_lossy_sequences=False,
        decode_inconsistent_utf8=False, explain=False,
    )
    for text in CORPUS:
        assert _fix_text_without_ftfy(text) == ftfy.fix_text(text, no_mojibake_repair), f"{text!r}"

    tokenizer = ClipTokenizer(ClipTokenizer.from_file(files["ViT-B-32"])._tokenizer, fix_text=_fix_text_without_ftfy)
    assert not tokenizer.uses_ftfy
    texts = [t for t in CORPUS if t != MOJIBAKE]
    np.testing.assert_array_equal(tokenizer(texts), open_clip_tokenizers["ViT-B-32"](texts).numpy())
    assert tokenizer.clean(MOJIBAKE) == MOJIBAKE.lower()  # the known difference: ftfy gives "café crème"


def _run_blocking(blocked: list[str], path: Path, texts: list[str]) -> dict:
    """Tokenize in a fresh interpreter in which importing any of ``blocked`` fails."""
    code = f"""
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from avss_sdk.tokenizer import ClipTokenizer
tokenizer = ClipTokenizer.from_file(sys.argv[1])
ids = tokenizer(json.load(sys.stdin))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "open_clip"))
print(json.dumps({{"ids": ids.tolist(), "uses_ftfy": tokenizer.uses_ftfy, "heavy": heavy}}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, str(path)], input=json.dumps(texts), capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("block_ftfy", [False, True], ids=["with-ftfy", "without-ftfy"])
def test_runtime_needs_no_torch(block_ftfy, files, open_clip_tokenizers):
    blocked = ["torch", "torchvision", "open_clip"] + (["ftfy"] if block_ftfy else [])
    texts = [t for t in CORPUS if t != MOJIBAKE] if block_ftfy else CORPUS
    result = _run_blocking(blocked, files["avss-text-tiny"], texts)
    assert result["heavy"] == [] and result["uses_ftfy"] is not block_ftfy
    np.testing.assert_array_equal(np.array(result["ids"]), open_clip_tokenizers["avss-text-tiny"](texts).numpy())


def test_input_errors(files):
    tokenizer = ClipTokenizer.from_file(files["avss-text-tiny"])
    with pytest.raises(TypeError, match="list of strings"):
        tokenizer("a red star")
    with pytest.raises(TypeError, match="item 1 is int"):
        tokenizer(["a red star", 3])
    assert tokenizer([]).shape == (0, 40)
    assert tokenizer(("a", "b")).shape == (2, 40)


def test_file_errors(tmp_path, files):
    with pytest.raises(FileNotFoundError, match="avss_sdk.export.tokenizer_json"):
        ClipTokenizer.from_file(tmp_path / "missing.json")
    text = files["avss-text-tiny"].read_text(encoding="utf-8")
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="corrupt"):
        ClipTokenizer.from_file(truncated)
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff\xfe\x00 not json")
    with pytest.raises(TokenizerFileError, match="corrupt"):
        ClipTokenizer.from_file(garbage)
    valid_json = tmp_path / "other.json"
    valid_json.write_text('{"model": {"type": "BPE"}}', encoding="utf-8")
    with pytest.raises(TokenizerFileError):
        ClipTokenizer.from_file(valid_json)

    data = json.loads(text)
    for key, value, message in [
        ("truncation", None, "context length is unknown"),
        ("normalizer", {"type": "Lowercase"}, "normalizer"),
        ("post_processor", None, "post-processor"),
    ]:
        broken = tmp_path / f"no-{key}.json"
        broken.write_text(json.dumps({**data, key: value}), encoding="utf-8")
        with pytest.raises(TokenizerFileError, match=message):
            ClipTokenizer.from_file(broken)
    data["padding"]["pad_id"] = 7
    broken.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="pad id 0"):
        ClipTokenizer.from_file(broken)


def test_export_writes_atomically_and_honours_context_length(tmp_path, open_clip_tokenizers):
    out = tmp_path / "tokenizer.json"
    out.write_text("old", encoding="utf-8")
    assert tokenizer_json.main(["--model", "avss-text-tiny", "--out", str(out), "--context-length", "16"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]  # no temporary file left
    assert out.stat().st_mode & 0o044  # readable like any file, not mkstemp's 0600
    tokenizer = ClipTokenizer.from_file(out)
    assert tokenizer.context_length == 16
    reference = tokenizer_json.load_open_clip_tokenizer("avss-text-tiny", context_length=16)
    np.testing.assert_array_equal(tokenizer([LONG, "a red star"]), reference([LONG, "a red star"]).numpy())


def test_export_refuses_what_it_cannot_reproduce(tmp_path, open_clip_tokenizers):
    reference = open_clip_tokenizers["avss-text-tiny"]
    with pytest.raises(ValueError, match="unknown open_clip model"):
        tokenizer_json.write_tokenizer_json("no-such-model", tmp_path / "t.json")
    with pytest.raises(ValueError, match="context_length"):
        tokenizer_json.write_tokenizer_json("avss-text-tiny", tmp_path / "t.json", context_length=1)
    for attribute, value, message in [("reduction_fn", print, "reduction_mask"), ("clean_fn", str.strip, "clean")]:
        original = getattr(reference, attribute)
        setattr(reference, attribute, value)
        try:
            with pytest.raises(ValueError, match=message):
                tokenizer_json.build_tokenizer(reference)
        finally:
            setattr(reference, attribute, original)
    with pytest.raises(ValueError, match="SimpleTokenizer"):
        tokenizer_json.build_tokenizer(object())
    assert not (tmp_path / "t.json").exists()
    assert tokenizer_json.main(["--model", "no-such-model", "--out", str(tmp_path / "t.json")]) == 2


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "avss_sdk.export.tokenizer_json", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--model" in proc.stdout and "--context-length" in proc.stdout
