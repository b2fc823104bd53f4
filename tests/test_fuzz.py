"""Fuzzing the inputs a user hands the SDK: only its documented errors ever come out.

Hypothesis generates frames and audio of every dtype, shape and value (NaN, inf, empty,
huge peaks, odd layouts, non-arrays) for ``Segmenter.segment``, and vocabularies of any
text and any type for ``clean_vocabulary``. Whatever comes in, the result is a label map of
the frame's size or an :class:`avss_sdk.AvssError`; a word that passes is text the
tokenizer takes. Examples are derandomized and bounded (well under a minute in all), so a
failure reproduces and the suite stays fast.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from avss_sdk.errors import AvssError
from avss_sdk.segmenter import DEFAULT_ENGINES, Segmenter
from avss_sdk.tokenizer import ClipTokenizer
from avss_sdk.vocab import VocabularyError, Words, category_prompts, clean_vocabulary

BOUNDED = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture],
               database=None)
DTYPES = st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64,
                          np.bool_, np.complex64])


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Segmenter:
    with Segmenter(vocab=["dog", "guitar"], backend="onnxruntime", cache_dir=tmp_path_factory.mktemp("cache"),
                   log=lambda message: None) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer.from_file(DEFAULT_ENGINES / "tokenizer.json")


def arrays(max_dims: int, max_side: int) -> st.SearchStrategy:
    return hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))


FRAMES = st.one_of(
    hnp.arrays(np.uint8, st.tuples(st.integers(0, 40), st.integers(0, 40), st.just(3))),  # mostly usable
    arrays(4, 8), st.none(), st.text(max_size=5), st.lists(st.integers(0, 255), max_size=4))
AUDIO = st.one_of(
    hnp.arrays(np.float32, st.integers(0, 20000), elements=st.floats(-1, 1, width=32)),
    hnp.arrays(np.int16, st.tuples(st.integers(0, 4000), st.integers(1, 3))),
    arrays(3, 30), st.none(), st.text(max_size=5),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
RATES = st.one_of(st.sampled_from([16000, 8000, 44100, 48000]), st.integers(-10, 10**7), st.floats(), st.none())


@settings(max_examples=40, **BOUNDED)
@given(image=FRAMES, audio=AUDIO, sample_rate=RATES)
def test_segment_gives_labels_or_a_documented_error(segmenter, image, audio, sample_rate):
    try:
        result = segmenter.segment(image, audio, sample_rate=sample_rate)
    except AvssError:
        return
    assert result.labels.shape == np.asarray(image).shape[:2]
    assert result.labels.min() >= 0 and result.labels.max() <= len(result.vocab)


WORDS = st.one_of(
    st.lists(st.text(max_size=30), max_size=6),
    st.lists(st.one_of(st.text(max_size=8), st.integers(), st.none(), st.binary(max_size=4)), max_size=4),
    st.text(max_size=10), st.none(), st.integers(), st.binary(max_size=8),
    st.lists(st.characters(codec=None, categories=["Cc", "Cf", "Cs", "Zs", "Co", "Mn"]).map(lambda c: c * 2),
             max_size=4),
    hnp.arrays(st.sampled_from(["U8", "O"]), hnp.array_shapes(max_dims=2, max_side=3), elements=st.text(max_size=4)),
    hnp.arrays(np.int32, hnp.array_shapes(max_dims=2, max_side=3)),
)


@settings(max_examples=200, **BOUNDED)
@given(words=WORDS)
def test_clean_vocabulary_gives_usable_words_or_a_vocabulary_error(tokenizer, words):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicates are dropped with a warning
        try:
            cleaned = clean_vocabulary(words)
        except VocabularyError:
            return
    assert isinstance(cleaned, Words) and cleaned
    assert len({w.casefold() for w in cleaned}) == len(cleaned)
    for word in cleaned:
        assert type(word) is str and word == word.strip() and word.encode("utf-8")
    tokens = tokenizer([p for w in cleaned for p in category_prompts(w)])
    assert tokens.shape == (4 * len(cleaned), tokenizer.context_length)
