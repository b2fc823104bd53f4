"""The web view in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by Selenium).

A real Stream (the shipped model, a clip paced at its frame rate) feeds a WebView on a
random loopback port; the browser loads the page, receives MJPEG frames, and a vocabulary
typed into the page reaches the stream and changes the legend.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from avss_sdk.stream import Stream
from avss_sdk.web import WebView, serve_stream

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_clip.mp4"
DEMO_WORDS = json.loads(DEMO.with_suffix(".json").read_text())["vocab"]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def long_clip(path: Path, repeats: int = 4) -> Path:
    """The demo clip's frames ``repeats`` times over (MJPG .avi, no audio track: the stream dubs the clip's)."""
    capture, frames = cv2.VideoCapture(str(DEMO)), []
    while (ok := capture.read())[0]:
        frames.append(ok[1])
    capture.release()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, frames[0].shape[1::-1])
    for frame in frames * repeats:
        writer.write(frame)
    writer.release()
    return path


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return value


def positive_rate(text: str) -> str | None:
    """``text`` when it reads "<rate> fps" with a rate above 0."""
    number = text.removesuffix(" fps")
    try:
        return text if number != text and float(number) > 0 else None
    except ValueError:
        return None


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("Debian chromium and chromium-driver are needed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=760,760"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_page_streams_frames_and_takes_a_new_vocabulary(browser, tmp_path):
    from selenium.webdriver.common.by import By

    clip = long_clip(tmp_path / "clip.avi")
    with pytest.warns(UserWarning, match="no audio track"), \
            Stream(source=clip, audio=DEMO, vocab=DEMO_WORDS, realtime=True) as stream:
        view = WebView(port=0, on_vocab=stream.set_vocab)
        worker = threading.Thread(target=lambda: [view.publish(r.plot(), stream.fps, r.vocab) for r in stream])
        worker.start()
        try:
            wait_for(lambda: view.status()["frames"] > 0, 60, "the first frame")
            browser.get(view.url)
            image = browser.find_element(By.ID, "view")
            wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", image) == 224, 30,
                     "the browser to decode an MJPEG frame")
            sent = view.frames_sent
            wait_for(lambda: view.frames_sent >= sent + 5, 30, "more frames to reach the browser")
            # The first frame's rate is 0 (none measured yet); a loaded machine may still show it for a while.
            fps = wait_for(lambda: positive_rate(browser.find_element(By.ID, "fps").text), 20, "a measured frame rate")
            assert fps.endswith(" fps")
            legend = browser.find_element(By.ID, "legend")
            assert all(word in legend.text for word in DEMO_WORDS)
            wait_for(lambda: view.status()["frames"] >= 15, 60, "frame 15 (the shapes sound from there on)")
            time.sleep(0.5)  # the page shows the newest frame
            browser.save_screenshot(str(tmp_path / "web_view.png"))
            shot = cv2.imread(str(tmp_path / "web_view.png"))
            assert shot is not None and shot.shape[1] >= 600 and shot.std() > 10  # a page, not a blank

            box = browser.find_element(By.ID, "words")
            box.clear()
            box.send_keys("bell, guitar")
            browser.find_element(By.CSS_SELECTOR, "#vocab-form button").click()
            wait_for(lambda: "bell" in legend.text and "guitar" in legend.text, 30, "the legend to show the new words")
            assert "purple square" not in legend.text
            assert stream.vocab == ["bell", "guitar"]

            box.clear()
            box.send_keys(" , ")
            browser.find_element(By.CSS_SELECTOR, "#vocab-form button").click()
            error = wait_for(lambda: browser.find_element(By.ID, "error").text, 10, "the page to show the error")
            assert "empty" in error
        finally:
            stream.stop()
            worker.join(timeout=30)
            view.close()


def test_routes_and_errors_without_a_browser():
    with WebView(port=0) as view:
        view.publish(np.zeros((20, 30, 3), np.uint8), 12.5, ["dog"])
        status = json.loads(urllib.request.urlopen(view.url + "status", timeout=10).read())
        assert status["fps"] == 12.5 and status["words"] == ["dog"] and status["frames"] == 1
        with urllib.request.urlopen(view.url + "stream", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            head = response.read(200)
        assert head.startswith(b"--avssframe\r\nContent-Type: image/jpeg")
        for path, data, code in (("nothing", None, 404), ("vocab", b"dog", 400)):  # no on_vocab: refused
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(view.url + path, data=data, timeout=10)
            assert error.value.code == code


def test_serve_stream_rejects_a_bad_address():
    class NoStream:
        set_vocab = None

    with pytest.raises(ValueError, match="HOST:PORT"):
        serve_stream(NoStream(), "localhost:http")


def test_live_demo_web_option_serves_the_stream():
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = subprocess.Popen([sys.executable, str(ROOT / "samples" / "live_demo.py"), "--web", f"127.0.0.1:{port}",
                             "--frames", "20"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def frames() -> int:
            try:
                return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read())["frames"]
            except OSError:  # not listening yet
                return 0

        wait_for(lambda: frames() > 0, 120, "the demo's first frame on the web view")
        out, err = demo.communicate(timeout=120)
    finally:
        demo.kill()
        demo.wait(10)
    assert demo.returncode == 0, err
    assert f"live view at http://127.0.0.1:{port}/" in err  # the demo says what it does on stderr
