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
from conftest import plain
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


STARTED: list[subprocess.Popen] = []  # every server a test started, in its own process group


@pytest.fixture(autouse=True, scope="module")
def no_server_outlives_its_tests():
    """A test that fails before it stops its server must not leave it running (under strace, say)."""
    yield
    for process in STARTED:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    STARTED.clear()


def start_app(root: Path, *extra: str, wrapper: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """``python app.py`` with its own temp folder, serving once it answers; (process, url)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_TEMP_DIR", "ORT_DISABLE_TELEMETRY",
                                                            "GRADIO_ANALYTICS_ENABLED")}
    env.update(TMPDIR=str(root), HOME=str(root / "home"), HF_HUB_OFFLINE="1")  # the app sets the rest itself
    log = open(root / "server.log", "w")
    process = subprocess.Popen([*wrapper, sys.executable, str(REPO / "app.py"), "--port", str(port), *extra],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    STARTED.append(process)
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

    values = client.predict(handle_file(str(path)), api_name="/analyse")
    return {name: plain(value) if app.OUTPUT_KINDS[name] == "markdown" else value
            for name, value in zip(app.Demo.OUTPUTS, values)}


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
        # the page explains itself: what the models know, the monitor, the IoU, the timings, the square
        labels = (REPO / "weights" / "teacher" / "labels.txt").read_text().split()
        expect(page.locator("#about")).to_contain_text(f"{len(labels)} classes")
        expect(page.locator("#about")).to_contain_text("best guess")
        expect(page.locator("#monitor")).to_contain_text("visual tokens")
        expect(page.locator("#monitor-help")).to_contain_text("not shares of a whole")
        assert page.locator("#monitor .output-class").count() == 0  # no classification look-alike
        expect(page.locator("#agreement")).to_contain_text("1 when their masks are the same")
        expect(page.locator("#teacher-info")).to_contain_text("Time this request took")
        expect(page.locator("#crop-help")).to_contain_text("centre square")
        for example in app.examples():
            expect(page.locator("#examples")).to_contain_text(app.example_label(example))
        page.wait_for_timeout(500)
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        page.locator("#classes").get_by_text(f"the {len(labels)} classes").click()  # the list, one click away
        expect(page.locator("#classes")).to_contain_text(labels[-1].replace("_", " "))
        clear = page.locator("#clip button[aria-label='Clear']")
        if clear.count():  # the clip shown goes first, as a user would remove it
            clear.first.click()
        # a file name in Markdown is shown as typed: no link, no emphasis (gradio itself drops the
        # characters some systems forbid in file names, '*' among them, so emphasis is written '__')
        named = tmp_path / "__bold__ [link](evil.example) www.evil.example.mp4"
        named.write_text("not a video\n" * 50)
        page.locator("#clip input[type=file]").set_input_files(str(named))
        page.wait_for_timeout(2000)
        page.locator("#run").click()
        expect(page.locator("#status")).to_contain_text("Cannot use this file", timeout=60_000)
        expect(page.locator("#status")).to_contain_text(named.name)
        assert page.locator("#status a").count() == 0 and page.locator("#status strong").count() == 1
        clear = page.locator("#clip button[aria-label='Clear']")
        if clear.count():
            clear.first.click()
        # a file over the upload limit is stopped in the page, which names it and the limit
        too_big = tmp_path / "too-big.mp4"
        too_big.write_bytes(os.urandom(int(1.6 * 2**20)))
        page.locator("#clip input[type=file]").set_input_files(str(too_big))
        expect(page.locator("#upload-error")).to_contain_text("too-big.mp4", timeout=10_000)
        expect(page.locator("#upload-error")).to_contain_text(f"{UPLOAD_LIMIT_MB:g} MB upload limit")
        browser.close()
    assert shot.stat().st_size > 10_000


def _upload(url: str, name: str, size: int):
    """POST one file to gradio's upload route, as the page does: (status, body)."""
    import httpx

    response = httpx.post(url + "gradio_api/upload", files={"files": (name, os.urandom(size), "video/mp4")},
                          timeout=60)
    return response.status_code, response.text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_cleans_up_as_ctrl_c_does(tmp_path, make_clip, sig):
    from gradio_client import Client

    root = tmp_path / "server"
    root.mkdir()
    process, url = start_app(root)
    out = analyse(Client(url, verbose=False), make_clip("clip.mp4", seconds=2.0, size=(96, 128)))
    assert out["status"].startswith("Analysed")
    assert list(root.glob("emktd-demo-*/files/requests/*/teacher.mp4"))  # a request's outputs ...
    assert list(root.glob("emktd-demo-*/files/**/clip.mp4"))  # ... and the upload, in the same folder
    stop_app(process, root, sig)


def test_uploads_are_bounded_in_bytes_and_deleted_after_their_time(tmp_path):
    """Three uploads of 0.8 MB fill a 2 MB store: the third is refused with a message; once the
    files are older than --keep-minutes (6 s here) the sweep deletes them and uploads go in again."""
    root = tmp_path / "server"
    root.mkdir()
    process, url = start_app(root, "--max-upload-mb", "1", "--max-stored-mb", "2", "--keep-minutes", "0.1")
    try:
        answers = [_upload(url, f"up{i}.mp4", int(0.8 * 2**20)) for i in range(3)]
        assert [status for status, _ in answers] == [200, 200, 507], answers
        assert "Try again in a few minutes" in answers[2][1] and "at most 2 MB" in answers[2][1]
        stored = sum(p.stat().st_size for p in root.glob("emktd-demo-*/files/**/*") if p.is_file())
        assert 1.5 * 2**20 < stored <= 2 * 2**20
        deadline = time.time() + 30
        while any(p.is_file() for p in root.glob("emktd-demo-*/files/**/*")) and time.time() < deadline:
            time.sleep(0.5)
        assert not any(p.is_file() for p in root.glob("emktd-demo-*/files/**/*")), "the sweep left old uploads"
        assert _upload(url, "again.mp4", int(0.8 * 2**20))[0] == 200
    finally:
        stop_app(process, root, signal.SIGINT)


def _connections(strace_log: Path) -> list[tuple[str, int]]:
    """The (address, port) of the internet connections (connect calls) an strace log shows."""
    found = []
    for line in strace_log.read_text().splitlines():
        if "connect(" in line and "AF_INET" in line:
            address = line.split("inet_addr(\"")[1].split("\"")[0] if "inet_addr(" in line else \
                line.split("inet_pton(AF_INET6, \"")[1].split("\"")[0]
            port = int(line.split("htons(")[1].split(")")[0]) if "htons(" in line else 0
            found.append((address, port))
    return found


def _ask_for_remote_files(url: str) -> None:
    """Every way a visitor could ask the server for another address's file; each must be refused."""
    import httpx

    remote = "https://example.invalid/clip.mp4"  # .invalid: were the guard to fail, no host answers for it
    for path in (f"gradio_api/file={remote}", "gradio_api/file=HTTP://www.example.invalid/clip.mp4",
                 f"gradio_api/proxy={remote}"):
        response = httpx.get(url + path, timeout=30)
        assert response.status_code == 403 and "does not fetch" in response.text, (path, response.text)
    data = {"data": [{"path": remote, "meta": {"_type": "gradio.FileData"}}]}
    response = httpx.post(url + "gradio_api/call/analyse", json=data, timeout=30)
    assert response.status_code == 400 and "example.invalid/clip.mp4" in response.text, response.text
    response = httpx.post(url + "gradio_api/queue/join", json={**data, "fn_index": 0, "session_hash": "visitor"},
                          timeout=30)
    assert response.status_code == 400 and "does not fetch" in response.text, response.text


def test_the_app_connects_to_nothing_outside_this_machine_even_when_asked_to_fetch(tmp_path):
    """Started as the README shows, without the Makefile's environment: neither onnxruntime's
    telemetry nor gradio's analytics may reach out, and no visitor's request may make it fetch (or
    look up) another address."""
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
    _ask_for_remote_files(url)
    time.sleep(5)  # telemetry would start in the background after start-up
    app_pid = int(subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()[0])
    stop_app(process, root, signal.SIGINT, app_pid)  # strace ends with the app it traces
    connections = _connections(log)
    assert connections, "strace saw no connection at all (not even the test's own to 127.0.0.1)"
    outside = [a for a, _ in connections if not (a.startswith("127.") or a == "::1")]
    lookups = [(a, port) for a, port in connections if port == 53]  # a DNS query, whatever the resolver's address
    assert not outside and not lookups, (outside, lookups)
