"""Make the shipped demo clip: one SynthAVS-OV scene as an MP4 with sound, and its vocabulary.

``live_demo.py`` plays it when there is no camera, so a first run always shows something.
The clip is a pure function of (split, seed, index), so this regenerates it byte for byte
on the same PyAV/FFmpeg versions:

    python samples/make_demo_clip.py                      # avss_sdk/assets/demo_clip.mp4 + .json

Video is H.264 at the scene's frame times (frame k at ``AUDIO_OFFSET + k / fps``), audio
AAC from time 0, so the first frame already has a full second of audio before it, as in
the dataset. The JSON beside it holds the words to ask for (the clip's categories) and
the scene text.
"""

from __future__ import annotations

import argparse
import fractions
import json
import sys
from pathlib import Path

import numpy as np


from avss_sdk.data.synthavs import render_clip, sample_scene, scene_text, synthesize_audio
from avss_sdk.data.synthavs.writer import clip_rng
from avss_sdk.demo import DEMO_CLIP
from avss_sdk.media import SAMPLE_RATE



def write_mp4(path: Path, frames: np.ndarray, frame_times: np.ndarray, audio: np.ndarray, crf: int = 30) -> None:
    """H.264 frames at ``frame_times`` (seconds) and 16 kHz int16 mono ``audio`` from time 0, as AAC."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("h264", rate=round(1 / np.diff(frame_times).mean()))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"crf": str(crf), "preset": "slow"}
        video.codec_context.time_base = fractions.Fraction(1, 1000)  # frame times are not multiples of 1 / fps
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        sound.bit_rate = 48000
        for image, time in zip(frames, frame_times):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = round(time * 1000), fractions.Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        samples = audio.astype(np.float32) / 32768
        for start in range(0, samples.size, 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
            out.mux(sound.encode(frame))
        out.mux(sound.encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEMO_CLIP, help="MP4 to write (the JSON goes beside it; default: the package's demo clip)")
    parser.add_argument("--split", default="test", help="SynthAVS split: test draws novel categories too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=int, default=5, help="which scene of (split, seed)")
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)

    scene = sample_scene(clip_rng(args.split, args.seed, args.index), args.split, args.frames, args.fps, args.size)
    rendered = render_clip(scene)
    write_mp4(args.out, rendered.frames, scene.frame_times, synthesize_audio(scene))
    words = list(dict.fromkeys(o.category.name for o in scene.objects))  # sounding or not: the model decides
    sounding = [o.category.name for o in scene.objects if o.sound_interval is not None]
    info = {"vocab": words, "sounding": sounding, "scene": scene_text(scene),
            "source": {"split": args.split, "seed": args.seed, "index": args.index, "frames": args.frames,
                       "fps": args.fps, "size": args.size}}
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB): {scene_text(scene)}; sounding: {', '.join(sounding) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
