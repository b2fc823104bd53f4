"""Audio decoding and the causal window of a frame."""

import numpy as np
import pytest

from avss_sdk.media import audio_window, read_audio


def test_window_ends_at_the_timestamp_and_pads_with_zeros():
    audio = np.arange(1, 101, dtype=np.float32)  # 100 samples at a 10 Hz "rate"
    window = audio_window(audio, end_time=3.0, sample_rate=10, seconds=5.0)
    assert window.shape == (50,)
    assert (window[:20] == 0).all()  # 2 s before the signal starts
    assert np.array_equal(window[20:], audio[:30])
    late = audio_window(audio, end_time=12.0, sample_rate=10, seconds=4.0)
    assert np.array_equal(late[:20], audio[80:]) and (late[20:] == 0).all()


def test_missing_and_undecodable_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_audio(tmp_path / "nothing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 10)
    with pytest.raises(ValueError, match="could not decode"):
        read_audio(junk)
