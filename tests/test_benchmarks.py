"""The speed-up benchmark's table machinery (shared with the real-size benchmark) and the export
comparison run end to end on the shipped default model; timings themselves are never asserted."""

from __future__ import annotations

from avss_sdk.segmenter import DEFAULT_ENGINES
from benchmarks.real_size import VARIANTS as REAL_SIZE_VARIANTS
from benchmarks.speedup import STAGES, speed_table
from benchmarks.stream import stream_file


def test_speed_table_fills_every_column_for_the_real_size_variants(tmp_path):
    clip = stream_file(tmp_path, 6, (160, 120))
    rows, fps = speed_table(None, clip, 1, None, REAL_SIZE_VARIANTS)
    assert list(rows) == list(REAL_SIZE_VARIANTS) and all(len(rounds) == 1 for rounds in fps.values())
    for row in rows.values():
        assert row["fps"] > 0 and row["latency"] > 0 and row["cpu_ms"] > 0 and row["busy"] > 0
        assert set(row["stages"]) == set(STAGES)
    today = rows["today: FP32, one frame at a time"]
    assert today["paired"] == 1.0 and today["agree"] == (1.0, 1.0)  # shares: the reference agrees with itself, pixel for pixel
    assert rows["FP32, pipelined"]["agree"][0] == 1.0  # the same FP32 stages, only overlapped


def test_export_ab_times_every_frame_stage_of_both_exports(tmp_path):
    """The shipped model against itself: a row per stage and thread setting, every time measured."""
    from benchmarks.export_ab import STAGES as AB_STAGES, main

    out = tmp_path / "ab.md"
    assert main([str(DEFAULT_ENGINES), "--rounds", "1", "--runs", "1", "--out", str(out)]) == 0
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith(("| 1 |", "| default |"))]
    assert [(r[0], r[1]) for r in rows] == [(f"| {t}", s) for t in ("1", "default") for s in AB_STAGES]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)


def test_labels_benchmark_times_every_camera_size(tmp_path):
    from benchmarks.labels import SIZES, main

    out = tmp_path / "labels.md"
    assert main(["--frames", "3", "--rounds", "1", "--out", str(out)]) == 0
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| ") and "x" in line[:12]]
    assert [r[0] for r in rows] == [f"| {w}x{h}" for w, h in SIZES]
    assert all(float(cell) > 0 for r in rows for cell in r[1:5])
