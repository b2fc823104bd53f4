"""Capture: camera, microphone and media files, each frame paired with the audio that ends at it.

Two kinds of source, one contract (see ``VideoSource`` and ``AudioSource``):

* a video source hands out ``Frame`` objects in capture order, each stamped with a time on
  the source's clock (a live camera drops the frames a slow consumer cannot take, so the
  model never lags behind the scene);
* an audio source answers ``window(end_time)``: the 0.96 s of 16 kHz mono audio that ends
  at ``end_time`` on the same clock (causal: nothing after ``end_time``), zero padded where
  nothing was captured.

``CameraSource`` and ``MicrophoneSource`` share ``time.monotonic()`` as their clock (their
``clock`` attribute is ``"monotonic"``); ``FileSource`` is both a video and an audio source
on the file's own clock (``"media"``: seconds from the start of the file). A consumer pairs
a video source only with an audio source of the same clock.

Each source also says how to wait for it: ``read(timeout)`` raises ``TimeoutError`` when no
frame came in ``timeout`` seconds (a live camera raises ``CameraError`` once it has sent
nothing for its own ``frame_timeout``), and an audio source's ``latency`` is how long after a
moment its audio reaches the buffer (0 for files), which ``window(..., timeout=)`` may wait.

One module per source (``camera``, ``microphone``, ``file``), the contract in ``base``
and the timed audio buffer in ``ring``; everything is importable from here. Everything is
torch-free; sounddevice (PortAudio) and PyAV are imported when a source that needs them is made.
"""

from avss_sdk.capture.base import AudioSource, CameraError, CaptureError, Frame, MicrophoneError, VideoSource
from avss_sdk.capture.camera import CameraSource, available_cameras, check_camera
from avss_sdk.capture.file import FileSource, read_frames
from avss_sdk.capture.microphone import MicrophoneSource
from avss_sdk.capture.ring import DRIFT_GAIN, GAP_TOLERANCE_SECONDS, AudioRing

__all__ = ["AudioRing", "AudioSource", "CameraError", "CameraSource", "CaptureError", "DRIFT_GAIN", "FileSource",
           "Frame", "GAP_TOLERANCE_SECONDS", "MicrophoneError", "MicrophoneSource", "VideoSource",
           "available_cameras", "check_camera", "read_frames"]
