"""The page in headless Chromium against a real server on 127.0.0.1: choose a file, record from a
microphone (Chromium's fake capture device, fed a clip of the sample), see the bars.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); skipped where they are absent.
Screenshots are left in the test's temporary folder.
"""

import os
import re
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Skipped without Chromium, except in CI (CI=true), whose .ci/run installs it: there it must run.
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    not (CHROMIUM and DRIVER) and os.environ.get("CI") != "true",
    reason="needs Chromium and its driver: apt-get install chromium chromium-driver")]
# Without the networking flags Chromium keeps trying to reach its services, which a closed network refuses.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         "--autoplay-policy=no-user-gesture-required", "--window-size=900,1000")
WAIT = 60  # seconds for anything the page does


@pytest.fixture(scope="module")
def server(trained_model):
    """The service on a free port of 127.0.0.1, in a thread of this process."""
    import uvicorn

    from acento.apps.serve import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(trained_model), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser(server, sample_clips, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    folder = tmp_path_factory.mktemp("browser")
    microphone = folder / "microphone.wav"  # what the fake capture device plays, in a loop
    audio, rate = sf.read(sample_clips[0], dtype="float32")
    sf.write(microphone, audio, rate, subtype="PCM_16")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f"--user-data-dir={folder / 'profile'}", f"--use-file-for-fake-audio-capture={microphone}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.get(server)
    yield driver
    driver.quit()


def wait_for_result(driver, file_name: str) -> list[tuple[str, float]]:
    """Waits until the page shows a result for `file_name`; returns its bars (class, percent), top first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        error = d.find_element(By.ID, "error")
        assert not error.is_displayed(), error.text
        return d.find_element(By.ID, "file-name").text == file_name and d.find_elements(By.CSS_SELECTOR, "#bars .bar")

    WebDriverWait(driver, WAIT).until(shown)
    rows = driver.find_elements(By.CSS_SELECTOR, "#bars .bar")
    return [(r.get_attribute("data-class"), float(r.find_element(By.CLASS_NAME, "pct").text.split()[0])) for r in rows]


def spectrogram_pixels(driver) -> np.ndarray:
    rgba = driver.execute_script("""const c = document.getElementById('spectrogram');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);""")
    return np.array(rgba, dtype=np.uint8).reshape(-1, 4)


def test_choosing_a_clip_shows_the_accent_a_bar_per_class_and_the_spectrogram(browser, sample_clips, tmp_path):
    from selenium.webdriver.common.by import By

    assert "LSTM model · high, low" in browser.find_element(By.ID, "model").text  # from /health
    browser.find_element(By.ID, "file-input").send_keys(str(sample_clips[1]))
    bars = wait_for_result(browser, sample_clips[1].name)
    assert sorted(name for name, _ in bars) == ["high", "low"]
    assert bars[0][1] >= bars[1][1] and sum(p for _, p in bars) == pytest.approx(100, abs=0.2)
    assert browser.find_element(By.ID, "label").text == bars[0][0]
    assert "analysed" in browser.find_element(By.ID, "spec-info").text
    pixels = spectrogram_pixels(browser)
    assert (pixels[:, 3] == 255).all() and len(np.unique(pixels[:, :3], axis=0)) > 50  # drawn, not blank
    browser.save_screenshot(str(tmp_path / "chosen-file.png"))


def test_a_text_file_shows_an_error_naming_it(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    notes = tmp_path / "notes.txt"
    notes.write_text("no audio here\n" * 20)
    browser.find_element(By.ID, "file-input").send_keys(str(notes))
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, WAIT).until(lambda d: error.is_displayed())
    assert "notes.txt" in error.text and "not an audio format acento reads" in error.text


def test_recording_from_the_microphone_gets_a_prediction(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    record = browser.find_element(By.ID, "record")
    record.click()
    WebDriverWait(browser, WAIT).until(
        lambda d: float(d.find_element(By.ID, "rec-time").text.split()[0]) >= 2.5)
    record.click()
    bars = wait_for_result(browser, "recording.wav")
    assert sorted(name for name, _ in bars) == ["high", "low"]
    # the page's WAV reached the server whole: about as long as the recording ran
    recorded = float(re.search(r"of ([0-9.]+) s", browser.find_element(By.ID, "spec-info").text).group(1))
    assert 2.3 <= recorded <= 10
    assert len(np.unique(spectrogram_pixels(browser)[:, :3], axis=0)) > 50
    browser.save_screenshot(str(tmp_path / "recording.png"))
