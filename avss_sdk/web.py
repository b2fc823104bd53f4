"""The live overlay in a web browser, for devices without a screen (a headless Jetson).

    python samples/live_demo.py --web 8080 --vocab "dog, guitar"   # then open http://127.0.0.1:8080/

    with WebView(port=8080, on_vocab=stream.set_vocab) as web:
        for result in stream:
            web.publish(result.plot(), stream.fps, result.vocab)

Routes: ``/`` a page with the overlay, the frame rate, a legend of the words in use and a
box to type new words; ``/stream`` the overlay as MJPEG (``multipart/x-mixed-replace``,
one JPEG per published frame); ``/status`` JSON (fps, words, frames); ``POST /vocab``
(body: comma-separated words) calls ``on_vocab`` (``Stream.set_vocab``: the stream keeps
running and switches when the words are ready); a bad vocabulary is a 400 with the reason.

The server is the standard library's ``http.server`` (a thread per connection): three
small routes and one streaming response need no web framework, and a device that runs
the SDK gets no extra dependency. It listens on 127.0.0.1 unless given another host.
"""

from __future__ import annotations

import html
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence

import cv2
import numpy as np

from avss_sdk.viz import class_color

BOUNDARY = "avssframe"
MAX_BODY = 64 * 1024  # bytes of a POSTed vocabulary
_WAIT_SECONDS = 1.0  # how often a waiting MJPEG connection checks whether the view closed

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>avss_sdk live view</title>
<style>
body {{ font-family: sans-serif; background: #222; color: #eee; margin: 1em; }}
#view {{ width: min(100%, 480px); border: 1px solid #555; }}
#legend span {{ display: inline-block; margin-right: 1em; }}
#legend i {{ display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: middle; }}
#error {{ color: #f88; }}
</style></head>
<body>
<h3>avss_sdk live view <span id="fps">{fps}</span></h3>
<img id="view" src="/stream" alt="live overlay"><br>
<div id="legend">{legend}</div>
<form id="vocab-form"><input id="words" size="50" value="{words}">
<button type="submit">Set vocabulary</button> <span id="error"></span></form>
<script>
function rgb(c) {{ return "rgb(" + c.join(",") + ")"; }}
async function poll() {{
  try {{
    const s = await (await fetch("/status")).json();
    document.getElementById("fps").textContent = s.fps.toFixed(1) + " fps";
    const legend = document.getElementById("legend");
    legend.replaceChildren(...s.words.map((w, i) => {{
      const item = document.createElement("span"), swatch = document.createElement("i");
      swatch.style.background = rgb(s.colors[i]); item.append(swatch, w); return item; }}));
  }} catch (e) {{}}
}}
setInterval(poll, 500);
document.getElementById("vocab-form").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const r = await fetch("/vocab", {{method: "POST", body: document.getElementById("words").value}});
  document.getElementById("error").textContent = r.ok ? "" : await r.text();
}});
</script></body></html>
"""


def parse_words(text: str) -> list[str]:
    """ "dog, guitar , person speaking" -> ["dog", "guitar", "person speaking"]."""
    return [word.strip() for word in text.split(",") if word.strip()]


class WebView:
    """An HTTP server showing the frames given to :meth:`publish`; ``port=0`` picks a free port."""

    def __init__(self, port: int = 8080, host: str = "127.0.0.1",
                 on_vocab: Callable[[list[str]], object] | None = None, quality: int = 80) -> None:
        self.on_vocab = on_vocab
        self._quality = quality
        self._changed = threading.Condition()
        self._jpeg: bytes | None = None
        self._sequence = 0
        self._fps = 0.0
        self._words: list[str] = []
        self._closed = False
        self.frames_sent = 0  # JPEG parts written to all MJPEG connections
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="avss-web", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def publish(self, image: np.ndarray, fps: float, words: Sequence[str]) -> None:
        """Show an RGB image (the overlay) with the frame rate and the words in use."""
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self._quality])
        if not ok:
            raise ValueError(f"could not encode a {image.shape} image as JPEG")
        with self._changed:
            self._jpeg, self._fps, self._words = jpeg.tobytes(), float(fps), list(words)
            self._sequence += 1
            self._changed.notify_all()

    def status(self) -> dict:
        with self._changed:
            return {"fps": self._fps, "words": list(self._words), "colors": [class_color(w) for w in self._words],
                    "frames": self._sequence}

    def _next_frame(self, seen: int) -> tuple[int, bytes] | None:
        """The first frame published after ``seen``; None once the view is closed."""
        with self._changed:
            while self._sequence == seen or self._jpeg is None:
                if self._closed:
                    return None
                self._changed.wait(_WAIT_SECONDS)
            return self._sequence, self._jpeg

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        view = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: a page polls /status twice a second
                pass

            def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/":
                    status = view.status()
                    legend = "".join(f'<span><i style="background: rgb{c}"></i>{html.escape(w)}</span>'
                                     for w, c in zip(status["words"], status["colors"]))
                    page = PAGE.format(fps=f"{status['fps']:.1f} fps", legend=legend,
                                       words=html.escape(", ".join(status["words"])))
                    self._send(HTTPStatus.OK, page.encode("utf-8"), "text/html; charset=utf-8")
                elif self.path == "/status":
                    self._send(HTTPStatus.OK, json.dumps(view.status()).encode(), "application/json")
                elif self.path == "/stream":
                    self._stream()
                else:
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

            def _stream(self) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = 0
                try:
                    while (frame := view._next_frame(seen)) is not None:
                        seen, jpeg = frame
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                        with view._changed:
                            view.frames_sent += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the browser went away

            def do_POST(self) -> None:
                if self.path != "/vocab":
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_BODY or view.on_vocab is None:
                    reason = "this view takes no vocabulary" if view.on_vocab is None else "send 1 to 64 KiB of words"
                    self._send(HTTPStatus.BAD_REQUEST, reason.encode(), "text/plain; charset=utf-8")
                    return
                text = self.rfile.read(length).decode("utf-8", errors="replace")
                try:
                    view.on_vocab(parse_words(text))
                except ValueError as error:  # VocabularyError and the rest of the bad-input errors
                    self._send(HTTPStatus.BAD_REQUEST, str(error).encode("utf-8"), "text/plain; charset=utf-8")
                    return
                self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")

        return Handler

    def close(self) -> None:
        """Stop serving: open MJPEG connections end within a second."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "WebView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_address(address: str) -> tuple[str, int]:
    """"PORT" or "HOST:PORT" -> (host, port); the host defaults to 127.0.0.1 (this machine only)."""
    host, _, port = str(address).rpartition(":")
    if not port.isdigit():
        raise ValueError(f"a web address is PORT or HOST:PORT, got {address!r}")
    return host or "127.0.0.1", int(port)


def serve_stream(stream, address: str, draw: Callable | None = None, frames: int | None = None) -> int:
    """Show ``stream`` at ``address`` ("PORT" or "HOST:PORT") until it ends, ``frames`` results, or Ctrl-C.

    ``draw(result)`` makes the RGB image to show (default: ``result.plot()``); the page's
    vocabulary box calls ``stream.set_vocab``. Returns the number of frames shown.
    """
    host, port = parse_address(address)
    view = WebView(port, host, on_vocab=stream.set_vocab)
    count = 0
    try:
        print(f"live view at {view.url}", flush=True)
        for result in stream:
            view.publish(draw(result) if draw else result.plot(), stream.fps, result.vocab)
            count += 1
            if frames is not None and count >= frames:
                break
    finally:
        view.close()
    return count
