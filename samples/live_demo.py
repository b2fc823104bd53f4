"""Live open-vocabulary audio-visual segmentation: camera and microphone (or a file) in, overlay out.

    python samples/live_demo.py --vocab "dog, guitar, person speaking"     # camera 0 + default mic
    python samples/live_demo.py --source clip.mp4 --vocab "dog, guitar"    # a file's video and audio
    python samples/live_demo.py                                            # no camera: the demo clip
    python samples/live_demo.py --headless --source samples/demo_clip.mp4 --out out.mp4

Shows each frame with the sounding objects tinted in their word's colour, a legend and the
frame rate, in a window (q or Esc quits). With no camera (and no --camera given) it plays
the shipped demo clip, samples/demo_clip.mp4, with the words of that clip. --headless
opens no window (for machines without a display) and needs --out or --frames.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

try:
    import avss_sdk  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avss_sdk.capture import CameraError, CaptureError, available_cameras
from avss_sdk.stream import Stream
from avss_sdk.viz import caption

DEMO_CLIP = Path(__file__).resolve().parent / "demo_clip.mp4"
WINDOW = "avss_sdk live demo"


def parse_words(text: str) -> list[str]:
    """ "dog, guitar , person speaking" -> ["dog", "guitar", "person speaking"]."""
    return [word.strip() for word in text.split(",") if word.strip()]


def demo_words() -> tuple[list[str], str | None]:
    """The demo clip's words and scene text, from the JSON written beside it by make_demo_clip.py."""
    info = json.loads(DEMO_CLIP.with_suffix(".json").read_text(encoding="utf-8"))
    return info["vocab"], info.get("scene")


def annotate(image: np.ndarray, fps: float, backend: str) -> np.ndarray:
    """Write the frame rate and backend in the bottom-left corner of an RGB image (in place)."""
    return caption(image, f"{fps:5.1f} fps  {backend}", (6, image.shape[0] - 8), 0.45)


def can_show_windows() -> str | None:
    """None if OpenCV can open a window here, else why not."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (DISPLAY is not set)"
    if "GUI" in cv2.getBuildInformation() and "NONE" in cv2.getBuildInformation().split("GUI:")[1].split("\n")[0]:
        return "this OpenCV was built without a GUI (opencv-python-headless)"
    return None


def open_stream(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Stream:
    """The stream the arguments ask for; the demo clip when no camera is there and none was named."""
    source, words, scene = args.source, parse_words(args.vocab) if args.vocab else None, args.scene
    common = dict(engines=args.engines, backend=args.backend, flow=args.flow, realtime=not args.headless)
    if source is None:
        if words or args.camera_given:
            if not words:
                parser.error('--vocab is required with a camera, e.g. --vocab "dog, guitar, person speaking"')
            level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our error says it better
            try:
                return Stream(camera=args.camera, mic=args.mic, vocab=words, scene=scene, **common)
            except CameraError:
                if args.camera_given:
                    raise
                print(f"No camera {args.camera} here (cameras: {available_cameras()}); playing the demo clip "
                      f"{DEMO_CLIP.name} with its own words instead. Use --source FILE for a file of yours.",
                      file=sys.stderr)
            finally:
                cv2.utils.logging.setLogLevel(level)
        else:
            print(f"No --vocab given: playing the demo clip {DEMO_CLIP.name} with its own words. For the camera, "
                  'give --vocab "dog, guitar, ..."', file=sys.stderr)
        source, words = DEMO_CLIP, None
    if Path(source) == DEMO_CLIP and not words:
        words, demo_scene = demo_words()
        scene = scene if scene is not None else demo_scene
    if not words:
        parser.error('--vocab is required, e.g. --vocab "dog, guitar, person speaking"')
    audio = args.mic if args.mic is not None and args.mic_for_file else None
    return Stream(source=source, audio=audio, vocab=words, scene=scene, **common)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--vocab", help='comma-separated words to look for, e.g. "dog, guitar, person speaking" '
                                        "(default with the demo clip: its words)")
    parser.add_argument("--scene", help='a description of the scene, e.g. "a band playing in a garage"')
    parser.add_argument("--source", help="a video file or URL to read video and audio from instead of the camera")
    parser.add_argument("--camera", type=int, help="camera index (default 0)")
    parser.add_argument("--mic", type=int, help="microphone (sounddevice input device index; default: the "
                                                "system's); with --source, the file's video plays live with it")
    parser.add_argument("--engines", help="model directory with manifest.json (default: the shipped model)")
    parser.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime", "torch"),
                        help="which runtime runs the model (default: auto, the fastest present)")
    parser.add_argument("--flow", default="model", choices=("model", "dis"),
                        help="optical flow: the model's flow stage, or OpenCV DIS (faster on CPUs)")
    parser.add_argument("--frames", type=int, help="stop after this many frames")
    parser.add_argument("--headless", action="store_true", help="no window (machines without a display)")
    parser.add_argument("--out", type=Path, help="write the overlay video here (.mp4 or .avi)")
    parser.add_argument("--snapshot", type=Path, help="save the last overlay frame as an image here (.png, .jpg)")
    parser.add_argument("--web", metavar="[HOST:]PORT", help="show the overlay in a web browser at http://HOST:PORT/ "
                                                           "instead of a window (default host 127.0.0.1)")
    args = parser.parse_args(argv)
    args.camera_given = args.camera is not None
    args.camera = args.camera if args.camera is not None else 0
    args.mic_for_file = args.source is not None
    if args.headless and args.out is None and args.frames is None and args.snapshot is None:
        parser.error("--headless shows nothing: give --out FILE, --snapshot IMAGE and/or --frames N")
    if args.frames is not None and args.frames < 1:
        parser.error("--frames must be at least 1")
    if not args.headless and args.web is None and (why := can_show_windows()):
        parser.error(f"cannot open a window: {why}; use --headless --out out.mp4")

    try:
        stream = open_stream(args, parser)
    except (CaptureError, FileNotFoundError, ValueError) as error:  # cameras, files, words, models
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.web is not None:
        from avss_sdk.web import serve_stream

        with stream:
            try:
                serve_stream(stream, args.web, lambda r: annotate(r.plot(), stream.fps, stream.backend), args.frames)
            except KeyboardInterrupt:
                return 130
            except (ValueError, OSError) as error:  # a bad address, a port in use
                print(f"error: {error}", file=sys.stderr)
                return 2
        return 0
    writer, first, count, image = None, None, 0, None
    try:
        with stream:
            print(f"{stream.backend} backend; looking for: {', '.join(stream.vocab)}", file=sys.stderr)
            for result in stream:
                image = annotate(result.plot(), stream.fps, stream.backend)
                if args.out is not None:
                    if writer is None and first is None:
                        first = (result.timestamp, image)  # the frame rate needs a second frame
                    else:
                        writer = writer or open_writer(args.out, image, first, result.timestamp)
                        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                if not args.headless:
                    cv2.imshow(WINDOW, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
                count += 1
                if args.frames is not None and count >= args.frames:
                    break
            if args.out is not None and writer is None and first is not None:  # a single frame
                writer = open_writer(args.out, first[1], first, first[0] + 0.1)
            print(f"{count} frames, {stream.fps:.1f} fps, {stream.dropped} dropped", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"interrupted after {count} frames", file=sys.stderr)
        return 130
    except CaptureError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if writer is not None:
            writer.release()
        if not args.headless:
            cv2.destroyAllWindows()
    if args.out is not None:
        print(f"wrote {args.out}", file=sys.stderr)
    if args.snapshot is not None and image is not None:
        if not cv2.imwrite(str(args.snapshot), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            print(f"error: could not write {args.snapshot}", file=sys.stderr)
            return 1
        print(f"wrote {args.snapshot}", file=sys.stderr)
    return 0


def open_writer(path: Path, image: np.ndarray, first: tuple[float, np.ndarray], second_time: float) -> cv2.VideoWriter:
    """A VideoWriter at the rate of the first two results, with the first frame already written."""
    fps = 1.0 / (second_time - first[0]) if second_time > first[0] else 10.0
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, min(max(fps, 1.0), 120.0), (image.shape[1], image.shape[0]))
    if not writer.isOpened():
        raise CaptureError(f"cannot write a video to {path} (OpenCV writes .mp4 with mp4v and .avi with MJPG)")
    writer.write(cv2.cvtColor(first[1], cv2.COLOR_RGB2BGR))
    return writer


if __name__ == "__main__":
    sys.exit(main())
