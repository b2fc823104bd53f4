"""The speed-up benchmark's table machinery (shared with the real-size benchmark) runs end to end
on a short clip with the shipped default model; timings themselves are never asserted."""

from __future__ import annotations

from benchmarks.real_size import VARIANTS as REAL_SIZE_VARIANTS
from benchmarks.speedup import STAGES, speed_table
from benchmarks.stream import stream_file


def test_speed_table_fills_every_column_for_the_real_size_variants(tmp_path):
    clip = stream_file(tmp_path, 6, (160, 120))
    rows, fps = speed_table(None, clip, 1, None, REAL_SIZE_VARIANTS)
    assert list(rows) == list(REAL_SIZE_VARIANTS) and all(len(rounds) == 1 for rounds in fps.values())
    for row in rows.values():
        assert row["fps"] > 0 and row["latency"] > 0
        assert set(row["stages"]) == set(STAGES)
    today = rows["today: FP32, one frame at a time"]
    assert today["agree"] == (1.0, 1.0)  # shares: the reference agrees with itself, pixel for pixel
    assert rows["FP32, pipelined"]["agree"][0] == 1.0  # the same FP32 stages, only overlapped
