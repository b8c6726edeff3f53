"""The demo served for real: `python app.py` on 127.0.0.1, driven by gradio_client and by headless Chromium."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import app
from emktd.media import probe

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app in its own process, with its own temp folders; stopped with Ctrl-C at the end."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(root / "gradio"), "TMPDIR": str(root), "HOME": str(root / "home"),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "ORT_DISABLE_TELEMETRY": "1"}
    log = open(root / "server.log", "w")
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--concurrency", "2"],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError(f"the app did not start: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url, root
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
    # the app's own output folder goes with it
    assert not list(root.glob("emktd-demo-*")), (root / "server.log").read_text()[-2000:]


def analyse(client, path):
    from gradio_client import handle_file

    return dict(zip(app.Demo.OUTPUTS, client.predict(handle_file(str(path)), api_name="/analyse")))


def test_gradio_client_concurrent_requests(server, make_clip):
    from gradio_client import Client

    url, root = server
    examples = app.examples()
    clips = examples + [make_clip("made.mp4", seconds=3.0, size=(96, 128))]
    client = Client(url, verbose=False)
    with ThreadPoolExecutor(len(clips)) as pool:
        results = list(pool.map(lambda p: analyse(Client(url, verbose=False), p), clips))
    for path, out in zip(clips, results):
        assert out["status"].startswith("Analysed"), (path, out["status"])
        for name in ("teacher", "student"):
            label = out[f"{name}_label"]
            assert label["label"] == label["confidences"][0]["label"] and len(label["confidences"]) == 5
            video = out[f"{name}_video"]
            video = video["video"] if isinstance(video, dict) else video  # the client downloads it
            assert probe(video).video_codec == "h264"
    # each request got its own clip's answer: a sequential call gives the same labels
    again = analyse(client, clips[0])
    assert again["teacher_label"] == results[0]["teacher_label"]
    # bad input over HTTP: a message, and the server serves the next request
    bad = root / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    out = analyse(client, bad)
    assert "Cannot use this file" in out["status"] and "bad.mp4" in out["status"]
    assert analyse(client, clips[-1])["status"].startswith("Analysed")


def _ensure_chromium() -> str | None:
    """Debian's chromium and chromium-driver, installed when missing; None when they cannot be."""
    if not CHROMIUM.exists() and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        command = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
        if subprocess.run(command, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(command, env=env, capture_output=True)
    if CHROMIUM.exists():
        return None
    return ("no /usr/bin/chromium and it cannot be installed here (needs apt-get as root): "
            "apt-get install chromium chromium-driver")


def test_browser_uploads_a_clip_and_sees_both_columns(server, tmp_path):
    reason = _ensure_chromium()
    if reason:
        if os.environ.get("EMKTD_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    url, _ = server
    clip = next(p for p in app.examples() if "clean" in p)
    shot = Path(os.environ.get("EMKTD_SCREENSHOT", tmp_path / "app.png"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.locator("#clip input[type=file]").set_input_files(clip)
        expect(page.locator("#clip video")).to_be_visible(timeout=60_000)  # the upload finished
        page.locator("#run").click()
        for name in ("teacher", "student"):
            expect(page.locator(f"#{name}-label")).to_contain_text("%", timeout=120_000)
            expect(page.locator(f"#{name}-video video")).to_be_visible(timeout=60_000)
            expect(page.locator(f"#{name}-info")).to_contain_text("parameters")
        expect(page.locator("#agreement")).to_contain_text("Mask IoU")
        expect(page.locator("#status")).to_contain_text("Analysed")
        teacher_text = page.locator("#teacher-label").inner_text()
        assert "hen" in teacher_text  # the clean example's sounding class
        video_src = page.locator("#teacher-video video").get_attribute("src")
        assert video_src and ".mp4" in video_src
        page.wait_for_timeout(500)
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
