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


UPLOAD_LIMIT_MB = 1.5  # small, so that the browser test can go over it with a small file


def start_app(root: Path, *extra: str, wrapper: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """``python app.py`` with its own temp folder, serving once it answers; (process, url)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_TEMP_DIR", "ORT_DISABLE_TELEMETRY",
                                                            "GRADIO_ANALYTICS_ENABLED")}
    env.update(TMPDIR=str(root), HOME=str(root / "home"), HF_HUB_OFFLINE="1")  # the app sets the rest itself
    log = open(root / "server.log", "w")
    process = subprocess.Popen([*wrapper, sys.executable, str(REPO / "app.py"), "--port", str(port), *extra],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError(f"the app did not start: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)


def stop_app(process: subprocess.Popen, root: Path, sig: int, pid: int | None = None) -> None:
    """Stop the app (``pid``, default the process itself) with ``sig``; everything it wrote under its temp
    folder must be gone."""
    os.kill(pid or process.pid, sig)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    left = [p for p in root.iterdir() if p.name not in ("server.log", "home")]
    assert not left, (left, (root / "server.log").read_text()[-2000:])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app in its own process; stopped with Ctrl-C at the end, which must leave nothing behind."""
    root = tmp_path_factory.mktemp("server")
    process, url = start_app(root, "--concurrency", "2", "--max-upload-mb", str(UPLOAD_LIMIT_MB))
    yield url, root
    stop_app(process, root, signal.SIGINT)


def analyse(client, path):
    from gradio_client import handle_file

    return dict(zip(app.Demo.OUTPUTS, client.predict(handle_file(str(path)), api_name="/analyse")))


def test_gradio_client_concurrent_requests(server, make_clip, tmp_path):
    from gradio_client import Client

    url, _ = server
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
    bad = tmp_path / "bad.mp4"
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
        sounding = Path(clip).stem.split("-")[0].replace("_", " ")
        assert sounding.replace(" ", "_") in teacher_text  # the clean example's sounding class, in the top 5
        video_src = page.locator("#teacher-video video").get_attribute("src")
        assert video_src and ".mp4" in video_src
        # the overlay video (a few frames with variable timing, H.264 + AAC) plays in the browser
        played = page.locator("#student-video video").evaluate("""async (v) => {
            v.muted = true;
            await v.play();
            await new Promise((done) => setTimeout(done, 1500));
            return {time: v.currentTime, duration: v.duration, error: v.error && v.error.code, width: v.videoWidth};
        }""")
        assert played["error"] is None and played["width"] > 0, played
        assert played["time"] > 0.5 and abs(played["duration"] - 5.0) < 0.1, played
        page.wait_for_timeout(500)
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        # a file over the upload limit is stopped in the page, which names it and the limit
        clear = page.locator("#clip button[aria-label='Clear']")
        if clear.count():  # the clip shown goes first, as a user would remove it
            clear.first.click()
        too_big = tmp_path / "too-big.mp4"
        too_big.write_bytes(os.urandom(int(1.6 * 2**20)))
        page.locator("#clip input[type=file]").set_input_files(str(too_big))
        expect(page.locator("#upload-error")).to_contain_text("too-big.mp4", timeout=10_000)
        expect(page.locator("#upload-error")).to_contain_text(f"{UPLOAD_LIMIT_MB:g} MB upload limit")
        browser.close()
    assert shot.stat().st_size > 10_000


def test_sigterm_cleans_up_as_ctrl_c_does(tmp_path, make_clip):
    from gradio_client import Client

    root = tmp_path / "server"
    root.mkdir()
    process, url = start_app(root)
    out = analyse(Client(url, verbose=False), make_clip("clip.mp4", seconds=2.0, size=(96, 128)))
    assert out["status"].startswith("Analysed")
    assert list(root.glob("emktd-demo-*/requests/*/teacher.mp4"))  # a request's outputs ...
    assert list(root.glob("emktd-demo-*/gradio/**/clip.mp4"))  # ... and gradio's copy of the upload
    stop_app(process, root, signal.SIGTERM)


def _connections(strace_log: Path) -> list[str]:
    """The addresses of the internet connections (connect calls) an strace log shows."""
    found = []
    for line in strace_log.read_text().splitlines():
        if "connect(" in line and ("AF_INET" in line):
            address = line.split("inet_addr(\"")[1].split("\"")[0] if "inet_addr(" in line else \
                line.split("inet_pton(AF_INET6, \"")[1].split("\"")[0]
            found.append(address)
    return found


def test_starting_the_app_connects_to_nothing_outside_this_machine(tmp_path):
    """Started as the README shows, without the Makefile's environment: neither onnxruntime's
    telemetry nor gradio's analytics may reach out."""
    if not shutil.which("strace") and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "strace"], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not shutil.which("strace"):
        reason = "strace is not installed and cannot be here (apt-get install strace)"
        if os.environ.get("EMKTD_REQUIRE_STRACE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    log, root = tmp_path / "strace.log", tmp_path / "server"
    root.mkdir()
    process, url = start_app(root, wrapper=("strace", "-f", "-qq", "-e", "trace=connect", "-o", str(log)))
    urllib.request.urlopen(url, timeout=10).read()
    time.sleep(5)  # telemetry would start in the background after start-up
    app_pid = int(subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()[0])
    stop_app(process, root, signal.SIGINT, app_pid)  # strace ends with the app it traces
    connections = _connections(log)
    assert connections, "strace saw no connection at all (not even the test's own to 127.0.0.1)"
    outside = [a for a in connections if not (a.startswith("127.") or a == "::1")]
    assert not outside, outside
