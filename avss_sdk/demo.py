"""Live open-vocabulary audio-visual segmentation: camera and microphone (or a file) in, overlay out.

    avss-demo --vocab "dog, guitar, person speaking"        # camera 0 + the default microphone
    avss-demo --source clip.mp4 --vocab "dog, guitar"       # a file's video and audio
    avss-demo                                               # no camera: the shipped demo clip
    avss-demo --headless --out segmented.mp4                # no window: write an H.264 video with sound

Shows each frame with the sounding objects tinted in their word's colour and, beside the
frame (hiding nothing), a legend and the frame rate, in a window (q or Esc quits). With no camera (and no --camera given) it says
so and plays the shipped demo clip instead, with the --vocab words given, or the clip's
own words when there are none. Without a display (or with --headless) it opens no
window and writes the video to --out (default segmented.mp4 when neither --out nor
--snapshot nor --frames is given). The video is H.264 with the audio the stream heard.
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import sys
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from avss_sdk.capture import CameraError
from avss_sdk.errors import AvssError
from avss_sdk.media import SAMPLE_RATE
from avss_sdk.result import Result
from avss_sdk.segmenter import Segmenter
from avss_sdk.stream import Stream
from avss_sdk.viz import class_color, legend_panel, panel_width
from avss_sdk.web import WebView, parse_address

DEMO_CLIP = Path(__file__).resolve().parent / "assets" / "demo_clip.mp4"
DEFAULT_OUT = Path("segmented.mp4")
WINDOW = "avss_sdk live demo"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class DemoError(AvssError, RuntimeError):
    """Something the demo cannot do (write its video, open a window), said in one line."""


def parse_words(text: str) -> list[str]:
    """ "dog, guitar , person speaking" -> ["dog", "guitar", "person speaking"]."""
    return [word.strip() for word in text.split(",") if word.strip()]


def demo_words() -> tuple[list[str], str | None]:
    """The demo clip's words and scene text, from the JSON beside it (written by samples/make_demo_clip.py)."""
    info = json.loads(DEMO_CLIP.with_suffix(".json").read_text(encoding="utf-8"))
    return info["vocab"], info.get("scene")


def is_demo_clip(source: str) -> bool:
    """Whether ``source`` is the shipped demo clip (samples/demo_clip.mp4 links to it)."""
    return "://" not in source and Path(source).resolve() == DEMO_CLIP


def can_show_windows() -> str | None:
    """None if OpenCV can open a window here, else why not."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (DISPLAY is not set)"
    gui = cv2.getBuildInformation().split("GUI:")[1].split("\n")[0] if "GUI:" in cv2.getBuildInformation() else ""
    if "NONE" in gui:
        return "this OpenCV was built without a GUI (opencv-python-headless)"
    return None


def build_parser() -> argparse.ArgumentParser:
    """The demo's options. A front end with more outputs adds its own arguments to this parser."""
    parser = argparse.ArgumentParser(prog="avss-demo", description=__doc__.split("\n\n")[0],
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
                        help="which runtime runs the model (default: auto, the first that works here)")
    parser.add_argument("--flow", default="model", choices=("model", "dis"),
                        help="optical flow: the model's flow stage, or OpenCV DIS (faster on CPUs)")
    parser.add_argument("--frames", type=int, help="stop after this many frames")
    parser.add_argument("--headless", action="store_true", help="no window (machines without a display)")
    parser.add_argument("--out", type=Path, help="write the overlay video here (.mp4: H.264 with the sound)")
    parser.add_argument("--snapshot", type=Path, help="save the last overlay frame as an image here (.png, .jpg)")
    parser.add_argument("--web", metavar="[HOST:]PORT", help="show the overlay in a web browser at http://HOST:PORT/ "
                        "(MJPEG, with a box to change the words) instead of a window; default host 127.0.0.1")
    parser.add_argument("--verbose", action="store_true", help="say more (e.g. why TensorRT was skipped)")
    return parser


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse and check the options; a bad one exits with status 2 and one ``error:`` line (argparse)."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.frames is not None and args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.vocab is not None and not parse_words(args.vocab):
        parser.error('--vocab has no words, e.g. --vocab "dog, guitar, person speaking"')
    if args.out is not None and args.out.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        parser.error(f"--out must end in .mp4, .mov or .mkv (H.264 with sound), got {args.out}")
    if not args.vocab and args.camera is not None:
        parser.error('--vocab is required with a camera, e.g. --vocab "dog, guitar, person speaking"')
    if not args.vocab and args.source is not None and not is_demo_clip(args.source):
        parser.error('--vocab is required with --source, e.g. --vocab "dog, guitar, person speaking"')
    if args.web is not None:
        try:
            parse_address(args.web)
        except ValueError as error:
            parser.error(str(error))
    if not args.headless and args.web is None and (why := can_show_windows()):
        print(f"cannot open a window: {why}; running headless", file=sys.stderr)
        args.headless = True
    if args.headless and args.web is None and args.out is None and args.snapshot is None and args.frames is None:
        args.out = DEFAULT_OUT
    return args


def open_stream(args: argparse.Namespace, segmenter: Segmenter) -> Stream:
    """The stream the arguments ask for, on the loaded ``segmenter``; the demo clip where no camera is there.

    Without --source and --camera, the camera is tried only when --vocab is given; with no
    camera the demo clip plays instead, with the --vocab words (the clip's own words and
    scene when there are none).
    """
    words = parse_words(args.vocab) if args.vocab else None
    live = dict(realtime=not args.headless, segmenter=segmenter)
    if args.source is not None and not (is_demo_clip(args.source) and not words):
        # with --mic, the file plays as if live with the microphone's sound
        return Stream(source=args.source, audio=args.mic, vocab=words, scene=args.scene, **live)
    if args.source is None and (args.camera is not None or words):
        try:
            return Stream(camera=args.camera or 0, mic=args.mic, vocab=words, scene=args.scene, **live)
        except CameraError as error:
            if args.camera is not None:
                raise
            print(f"{error}: playing the demo clip {DEMO_CLIP.name} with your words instead "
                  "(--source FILE plays a file of yours)", file=sys.stderr)
    elif args.source is None:
        print(f"no --vocab given: playing the demo clip {DEMO_CLIP.name} with its own words "
              '(for the camera, give --vocab "dog, guitar, ...")', file=sys.stderr)
    clip_words, clip_scene = demo_words()
    scene = args.scene if args.scene is not None or words else clip_scene
    return Stream(source=DEMO_CLIP, audio=args.mic, vocab=words or clip_words, scene=scene, **live)


class Sink(Protocol):
    """Somewhere results go: a window, a video file, a snapshot."""

    def add(self, image: np.ndarray, result: Result, stream: Stream) -> bool:
        """Take one overlay (RGB); False asks the demo to stop."""

    def close(self) -> None: ...


class WindowSink:
    """An OpenCV window; q or Esc stops."""

    def add(self, image: np.ndarray, result: Result, stream: Stream) -> bool:
        cv2.imshow(WINDOW, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyAllWindows()


class WebSink:
    """The overlay in a web browser (:mod:`avss_sdk.web`): MJPEG at /stream, words typed in the page."""

    def __init__(self, address: str) -> None:
        self.host, self.port = parse_address(address)
        self.view: WebView | None = None

    def add(self, image: np.ndarray, result: Result, stream: Stream) -> bool:
        if self.view is None:  # opened on the first overlay: the page's word box needs the stream
            self.view = WebView(self.port, self.host, on_vocab=stream.set_vocab)
            print(f"live view at {self.view.url}", file=sys.stderr, flush=True)
        self.view.publish(image, stream.fps, result.vocab)
        return True

    def close(self) -> None:
        if self.view is not None:
            self.view.close()


class VideoSink:
    """An H.264 video of the overlays with the stream's audio as AAC, written with PyAV.

    The frame rate is that of the first two results; each frame's presentation time is
    its timestamp, so dropped frames keep video and sound in step. The audio is what the
    stream heard between consecutive frames (``Stream.audio``), 16 kHz mono.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container = None
        self._first: tuple[np.ndarray, float] | None = None
        self._origin = 0.0
        self._last_pts = -1
        self._samples = 0  # audio samples written, from the first frame's time
        self._period = 0.1

    def add(self, image: np.ndarray, result: Result, stream: Stream) -> bool:
        image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]  # H.264 4:2:0 needs even sizes
        if self._container is None:
            if self._first is None:
                self._first = (image, result.timestamp)  # the frame rate needs a second frame
                return True
            self._open(self._first[0], self._first[1], result.timestamp)
        self._write_audio(stream, result.timestamp)
        self._write_video(image, result.timestamp)
        return True

    def _open(self, image: np.ndarray, first_time: float, second_time: float) -> None:
        import av

        self._period = second_time - first_time if second_time > first_time else 0.1
        rate = fractions.Fraction(min(max(1.0 / self._period, 1.0), 120.0)).limit_denominator(1001)
        try:
            self._container = av.open(str(self.path), "w")
        except (OSError, av.FFmpegError) as error:
            self._first = None  # said once: closing writes nothing more
            raise DemoError(f"cannot write a video to {self.path}: {error}") from None
        self._video = self._container.add_stream("libx264", rate=rate)
        self._video.width, self._video.height, self._video.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        self._video.options = {"crf": "20", "preset": "veryfast"}
        self._audio = self._container.add_stream("aac", rate=SAMPLE_RATE)
        self._audio.layout = "mono"
        self._rate, self._origin = rate, first_time
        self._write_video(image, first_time)

    def _write_video(self, image: np.ndarray, timestamp: float) -> None:
        import av

        pts = max(int(round((timestamp - self._origin) * self._rate)), self._last_pts + 1)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, self._last_pts = pts, pts
        self._container.mux(self._video.encode(frame))

    def _write_audio(self, stream: Stream, timestamp: float) -> None:
        """The audio from the end of what was written to ``timestamp``."""
        end = int(round((timestamp - self._origin) * SAMPLE_RATE))
        if end > self._samples:
            seconds = (end - self._samples) / SAMPLE_RATE
            self._encode_audio(stream.audio(self._origin + end / SAMPLE_RATE, seconds), end)

    def _encode_audio(self, samples: np.ndarray, end: int) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(np.asarray(samples, np.float32)[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, self._samples
        self._samples = end
        self._container.mux(self._audio.encode(frame))

    def close(self) -> None:
        """Write a lone frame if only one came, pad the sound to the last frame's end, and finish the file."""
        if self._container is None and self._first is not None:
            self._open(self._first[0], self._first[1], self._first[1] + 0.1)
        if self._container is None:
            return
        end = int(round((self._last_pts + 1) / self._rate * SAMPLE_RATE))
        if end > self._samples:
            self._encode_audio(np.zeros(end - self._samples, np.float32), end)
        self._container.mux(self._video.encode(None))
        self._container.mux(self._audio.encode(None))
        self._container.close()
        self._container = None


class SnapshotSink:
    """Keeps the last overlay and writes it as an image at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.image: np.ndarray | None = None

    def add(self, image: np.ndarray, result: Result, stream: Stream) -> bool:
        self.image = image
        return True

    def close(self) -> None:
        if self.image is not None and not cv2.imwrite(str(self.path), cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR)):
            raise DemoError(f"could not write {self.path} (an image needs a .png or .jpg name in a folder that exists)")


def status_text(fps: float, backend: str) -> str:
    """ "12.3 fps  onnxruntime"; the backend alone until a frame rate is measured (never "0.0 fps")."""
    return f"{fps:5.1f} fps  {backend}" if fps > 0 else backend


def compose(result: Result, status: str, width: int) -> np.ndarray:
    """The overlay with, beside it (hiding nothing of the frame), a ``width``-pixel legend and ``status`` panel."""
    frame = result.plot(legend=False)
    names = [f"{o.label} {o.score:.2f}" for o in result.objects]
    panel = legend_panel(frame.shape[0], width, names, [class_color(o.label) for o in result.objects],
                         footer=status)
    return np.concatenate([frame, panel], axis=1)


def demo_panel_width(stream: Stream, height: int) -> int:
    """A legend panel wide enough for every word of the stream's vocabulary with its score, and the status."""
    return panel_width([f"{word} 0.00" for word in stream.vocab] + [status_text(999.9, stream.backend_name)],
                       height)


def make_sinks(args: argparse.Namespace) -> list[Sink]:
    """The outputs the arguments ask for."""
    sinks: list[Sink] = []
    if args.web is not None:
        sinks.append(WebSink(args.web))
    elif not args.headless:
        sinks.append(WindowSink())
    if args.out is not None:
        sinks.append(VideoSink(args.out))
    if args.snapshot is not None:
        sinks.append(SnapshotSink(args.snapshot))
    return sinks


def run(args: argparse.Namespace) -> int:
    """Load the model once, open the stream, send every overlay to the sinks; the exit status."""
    try:
        segmenter = Segmenter(args.engines, backend=args.backend, flow=args.flow, verbose=args.verbose)
    except (AvssError, OSError, ValueError) as error:  # no manifest, no backend, a bad model file
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sinks: list[Sink] = []
    count = 0
    try:
        try:
            stream = open_stream(args, segmenter)
        except (AvssError, OSError, ValueError) as error:  # cameras, files, words
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        sinks = make_sinks(args)
        with stream:
            print(f"{stream.backend_name} backend; looking for: {', '.join(stream.vocab)}", file=sys.stderr)
            width = None  # the panel's width, fixed for the run (a video keeps one frame size)
            for result in stream:
                width = width or demo_panel_width(stream, result.frame.shape[0])
                image = compose(result, status_text(stream.fps, stream.backend_name), width)
                count += 1
                if not all([sink.add(image, result, stream) for sink in sinks]):
                    break
                if args.frames is not None and count >= args.frames:
                    break
            print(f"{count} frames, {stream.fps:.1f} fps, {stream.dropped} dropped", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"interrupted after {count} frames", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (AvssError, OSError) as error:  # a camera that stopped, a file that cannot be written
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        status = close_sinks(sinks)
        segmenter.close()
    return status


def close_sinks(sinks: list[Sink]) -> int:
    """Close every sink (a video is finished even after Ctrl-C); say what was written."""
    status = EXIT_OK
    for sink in sinks:
        try:
            sink.close()
        except (AvssError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        path = getattr(sink, "path", None)
        if path is not None and Path(path).is_file():
            print(f"wrote {path}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """``avss-demo``: parse the options and run."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
