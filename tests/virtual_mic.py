"""A real microphone path without a sound card: a private PulseAudio server with a null sink.

Audio played into the sink ``vmic`` (``paplay --device=vmic``, or a PortAudio output
stream on ALSA ``default``) comes back, sample-exact, from its monitor, which is the
server's default source and so what sounddevice records from ALSA ``default``.

PortAudio lists devices once, when it is initialised (``import sounddevice``), and the
ALSA ``pulse`` plugin finds the server through ``PULSE_SERVER`` / ``XDG_RUNTIME_DIR`` when a
stream is opened. So the server is started first, the variables are set in
``os.environ``, and then PortAudio is re-initialised (``sd._terminate(); sd._initialize()``,
sounddevice's own functions for this; there is no public one). Without that, a process
that imported sounddevice earlier sees no device at all on a machine without a sound card.
No stream may be open while that happens; on exit the variables are restored and
PortAudio is re-initialised again.

A new null sink first renders one block of about 2 s (``pactl list sinks`` shows its
latency counting down from 1.9 s), so a sound played in that time comes out up to 2 s late
(measured: 1.2 s once, then 5 ms). The server is therefore only handed out once the
sink's latency is under 50 ms, and a silent low-latency stream (``pacat`` from /dev/zero)
keeps it running at 10 ms latency from then on, idle or not.

Use ``with virtual_microphone() as mic: ...`` or the ``virtual_mic`` fixture (import it
into a test module: ``from virtual_mic import virtual_mic``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import pytest

SINK = "vmic"
RATE = 16000
T = TypeVar("T")


@dataclass
class VirtualMic:
    """A running virtual microphone: its sink name, sample rate and server socket."""

    sink: str
    rate: int
    server: str

    def play(self, wav: str | Path, timeout: float = 30.0) -> None:
        """Play a WAV file into the sink and return when it has been played."""
        subprocess.run(["paplay", f"--device={self.sink}", str(wav)], check=True, timeout=timeout)


def _reinitialise_portaudio() -> None:
    """Make an already imported sounddevice list devices again (see the module docstring)."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


def _wait_for_low_latency(sink: str, env: dict[str, str], deadline: float) -> None:
    """Wait until the sink's reported latency is under 50 ms (see the module docstring)."""
    while time.monotonic() < deadline:
        listing = subprocess.run(["pactl", "list", "sinks"], env=env, capture_output=True, text=True).stdout
        block = listing[listing.find(f"Name: {sink}") :]
        latency = re.search(r"Latency: (\d+) usec", block)
        if latency and int(latency.group(1)) < 50_000:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the null sink {sink!r} did not reach a low latency within 10 s")


def _stop(process: subprocess.Popen) -> None:
    """Terminate a process this module started, and reap it."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def virtual_microphone(sink: str = SINK, rate: int = RATE) -> Iterator[VirtualMic]:
    """Start a private PulseAudio server with a mono s16le null sink; stop it and clean up on exit.

    Skips the calling test when PulseAudio, its tools or PortAudio are not installed.
    """
    for tool in ("pulseaudio", "pactl", "paplay", "pacat"):
        if shutil.which(tool) is None:
            pytest.skip(f"virtual microphone needs {tool} (apt install pulseaudio pulseaudio-utils)")
    plugins = ("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so", "/usr/lib*/alsa-lib/libasound_module_pcm_pulse.so")
    if sys.platform.startswith("linux") and not any(next(Path("/").glob(pattern[1:]), None) for pattern in plugins):
        pytest.skip("virtual microphone needs ALSA's PulseAudio plugin (apt install libasound2-plugins)")
    try:
        import sounddevice  # noqa: F401  (PortAudio must load for any recording)
    except OSError as error:
        pytest.skip(f"virtual microphone needs PortAudio (apt install libportaudio2): {error}")

    runtime = tempfile.mkdtemp(prefix="avss-pulse-")  # mode 0700, as PulseAudio requires
    server = f"unix:{runtime}/pulse/native"
    env = {**os.environ, "XDG_RUNTIME_DIR": runtime, "PULSE_SERVER": server}
    saved = {key: os.environ.get(key) for key in ("XDG_RUNTIME_DIR", "PULSE_SERVER")}
    processes: list[subprocess.Popen] = []
    with open(Path(runtime) / "pulseaudio.log", "w+b") as log:
        try:
            processes.append(
                subprocess.Popen(
                    [
                        "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--system=false",
                        "--load=module-native-protocol-unix auth-anonymous=1",
                        f"--load=module-null-sink sink_name={sink} rate={rate} channels=1 format=s16le",
                    ],
                    env=env,
                    stdout=log,  # a file, not a pipe that nobody drains
                    stderr=subprocess.STDOUT,
                )
            )
            deadline = time.monotonic() + 10
            while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
                if processes[0].poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"pulseaudio exited: {log.read().decode(errors='replace')}")
                if time.monotonic() > deadline:
                    raise RuntimeError("pulseaudio did not accept connections within 10 s")
                time.sleep(0.05)
            with open("/dev/zero", "rb") as zeros:
                processes.append(
                    subprocess.Popen(
                        [
                            "pacat", "--playback", f"--device={sink}", "--latency-msec=10", "--raw",
                            "--format=s16le", f"--rate={rate}", "--channels=1",
                        ],
                        env=env,
                        stdin=zeros,
                    )
                )
            _wait_for_low_latency(sink, env, deadline=time.monotonic() + 10)
            os.environ.update(XDG_RUNTIME_DIR=runtime, PULSE_SERVER=server)
            _reinitialise_portaudio()
            yield VirtualMic(sink, rate, server)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            for process in reversed(processes):
                _stop(process)
            _reinitialise_portaudio()
            shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(scope="module")
def virtual_mic() -> Iterator[VirtualMic]:
    """A virtual microphone shared by the tests of one module."""
    with virtual_microphone() as mic:
        yield mic


class Player:
    """Plays a signal on PortAudio's default output (the virtual microphone's sink) in a thread.

    ``start_time`` is the monotonic time of its first sample (from PortAudio's DAC time);
    ``latency`` the output latency; ``underflowed`` whether the output ran dry while playing (on a
    loaded machine): the samples after the gap then played later than ``start_time`` implies.
    """

    def __init__(self, signal: np.ndarray, rate: int = 16000) -> None:
        self.signal, self.rate = signal, rate
        self.started = threading.Event()
        self.start_time = self.latency = None
        self.underflowed = False
        self._thread = threading.Thread(target=self._run, name="test-player")
        self._thread.start()

    def _run(self) -> None:
        import sounddevice as sd

        position, offsets, first = 0, [], []

        def callback(out, frames, time_info, status):
            nonlocal position
            self.underflowed |= bool(status.output_underflow)
            offsets.append(time.monotonic() - time_info.currentTime)
            if position == 0:
                first.append(time_info.outputBufferDacTime)
            chunk = self.signal[position : position + frames]
            out[:] = 0
            out[: chunk.size, 0] = chunk
            position += frames
            if len(offsets) == 3:  # the offset settles on the smallest of a few
                self.start_time = first[0] + min(offsets)
                self.started.set()

        with sd.OutputStream(samplerate=self.rate, channels=1, dtype="float32", latency="low", callback=callback) as s:
            self.latency = s.latency
            time.sleep(self.signal.size / self.rate + 0.3)

    def join(self) -> None:
        self._thread.join()

    def check_timing(self) -> None:
        """PlaybackUnderflow if the output ran dry (call after join)."""
        if self.underflowed:
            raise PlaybackUnderflow("the test player's output ran dry")


class PlaybackUnderflow(RuntimeError):
    """The output ran dry while playing: the signal's timing is unknown after the gap."""


def play(signal: np.ndarray, rate: int = 16000) -> tuple[float, float]:
    """Play ``signal`` to the end; (monotonic time of its first sample, output latency).

    Raises PlaybackUnderflow when the output ran dry, so that a timing test measures again
    instead of judging a signal that played late."""
    player = Player(signal, rate)
    player.join()
    player.check_timing()
    return player.start_time, player.latency


def without_underflow(measure: Callable[[], T], attempts: int = 3) -> T:
    """``measure()`` again while its playback underflows, ``attempts`` times at most."""
    for attempt in range(attempts):
        try:
            return measure()
        except PlaybackUnderflow:
            if attempt == attempts - 1:
                raise
