"""The emktd demo: a teacher and its EM-KTD student, side by side, on an uploaded clip.

    python app.py                      # http://127.0.0.1:7860 with weights/teacher and weights/student
    python app.py --help

For each model: the top-5 sound events, the sounding object segmented on the sampled frames
(an H.264 overlay video that plays in the browser), the time of each stage and the parameter
count; beside them, whether the two agree and how much the entropy monitor trusts each
modality of the clip.  Models load once, at start-up; :meth:`Demo.handle` is a plain
function of the uploaded file's path (the tests call it without a browser).

The server fetches nothing for a visitor (a URL in place of an upload is refused, and gradio's
URL-fetching paths are closed), keeps what visitors leave within a bound (:class:`Storage`), and
shows every piece of text a visitor controls escaped.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Read by gradio and onnxruntime when they load: the demo makes no connection of its own accord
# (onnxruntime's telemetry otherwise looks up its host at start-up, gradio's analytics send events).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"
NUM_FRAMES = 5  # frames sampled in the audio window, as many as the benchmark annotates
MAX_SIDE = 512  # frames are decoded downscaled to this longer side (4K included)
LARGE_SIDE = 1920  # above this, the UI says that the frames were downscaled
MIN_SIDE = 16  # smaller pictures show nothing a model or a person could use


# What the page shows, in the order the handler returns it: name -> kind of component.  The
# handler, the page and the tests all take the order from here.
OUTPUT_KINDS = {"status": "markdown", "teacher_label": "label", "teacher_video": "video", "teacher_info": "markdown",
                "student_label": "label", "student_video": "video", "student_info": "markdown",
                "agreement": "markdown", "monitor": "markdown"}
OUTPUTS = tuple(OUTPUT_KINDS)


def outputs(**values) -> tuple:
    """The handler's return value: ``values`` in OUTPUTS order, the rest empty."""
    unknown = set(values) - set(OUTPUTS)
    assert not unknown, f"not outputs of the page: {unknown}"
    return tuple(values.get(name, "" if OUTPUT_KINDS[name] == "markdown" else None) for name in OUTPUTS)


class InputError(ValueError):
    """An upload the demo cannot use; the message says why, in the user's terms."""


# ------------------------------------------------------------------ text a visitor controls

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def escape(text) -> str:
    """``text`` as literal characters in a Markdown component: every ASCII punctuation character
    backslash-escaped (CommonMark allows it for each), so that a file name such as
    ``**bold** [link](evil.example).mp4`` shows as typed: no emphasis, link, autolink, HTML or
    heading comes of it.  Line breaks become spaces."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(str(text).split()))


# ------------------------------------------------------------------ what visitors leave on the server

class Storage:
    """The folder that holds what visitors leave (their uploads and each request's outputs), kept
    within a bound: files older than ``keep_s`` are deleted (by :meth:`sweep`, which the server
    runs every few seconds), and an upload that would take the folder over ``max_bytes`` or
    ``max_files`` is refused (:meth:`admit`), counting uploads still on their way in."""

    def __init__(self, root: str | Path, max_bytes: int, max_files: int, keep_s: float):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_files, self.keep_s = max_bytes, max_files, keep_s
        self.lock = threading.Lock()
        self.incoming = {"bytes": 0, "files": 0}  # admitted uploads not yet written

    def _files(self):
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = Path(folder) / name
                try:
                    yield path, path.stat()
                except FileNotFoundError:
                    pass

    def sweep(self) -> tuple[int, int]:
        """Delete the files older than ``keep_s`` (by their last write), then the folders this left
        empty and any empty folder as old (one made just now is about to receive its file: an
        upload's, a request's outputs).  Returns (bytes, files) of what is left."""
        cutoff = time.time() - self.keep_s
        held = files = 0
        with self.lock:
            emptied = set()
            for path, stat in list(self._files()):
                if stat.st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    emptied.add(path.parent)
                else:
                    held, files = held + stat.st_size, files + 1
            for folder, _, _ in sorted(os.walk(self.root), key=lambda entry: -len(entry[0])):
                folder = Path(folder)
                try:
                    if folder != self.root and (folder in emptied or folder.stat().st_mtime < cutoff):
                        folder.rmdir()  # only when empty
                        emptied.add(folder.parent)
                except OSError:
                    pass
        return held, files

    def usage(self) -> tuple[int, int]:
        """(bytes, files) held now."""
        sizes = [stat.st_size for _, stat in self._files()]
        return sum(sizes), len(sizes)

    def admit(self, size: int) -> str | None:
        """Reserve room for an upload of ``size`` bytes, or say why there is none (None: admitted;
        :meth:`release` it once the upload has been written or has failed)."""
        held, files = self.sweep()
        with self.lock:
            held, files = held + self.incoming["bytes"], files + self.incoming["files"]
            if held + size > self.max_bytes or files + 1 > self.max_files:
                return (f"The server holds as many uploads as it keeps ({held / 2**20:.0f} MB in {files} files; at "
                        f"most {self.max_bytes / 2**20:.0f} MB in {self.max_files}); each is deleted "
                        f"{self.keep_s / 60:g} minutes after it came. Try again in a few minutes.")
            self.incoming["bytes"] += size
            self.incoming["files"] += 1
            return None

    def release(self, size: int) -> None:
        with self.lock:
            self.incoming["bytes"] -= size
            self.incoming["files"] -= 1


# ------------------------------------------------------------------ no fetches on a visitor's behalf

_REMOTE = re.compile(r"^\s*(?:[a-zA-Z][a-zA-Z0-9+.\-]*:/|//|\\\\|data:|file:)")
NO_FETCH = "This demo does not fetch files from other addresses; upload the clip itself."


class RemoteFetchRefused(PermissionError):
    pass


def _remote(value) -> bool:
    return isinstance(value, str) and bool(_REMOTE.match(value))


def _remote_in(data) -> str | None:
    """The first remote address among the values of a request body (a FileData's ``url`` is only the
    address the page shows it at, so it is not looked at; its ``path`` is what gradio would fetch)."""
    if isinstance(data, dict):
        return next((found for key, value in data.items() if key != "url" and (found := _remote_in(value))), None)
    if isinstance(data, list):
        return next((found for value in data if (found := _remote_in(value))), None)
    return data if _remote(data) else None


def close_remote_fetches() -> None:
    """Replace what gradio fetches URLs with (files named by URL in an input, ``/file=<url>``) by a
    refusal, below every route, so that no request can make the server look a host up."""
    import safehttpx
    from gradio import processing_utils

    def refuse(url, *args, **kwargs):
        raise RemoteFetchRefused(f"{url}: {NO_FETCH}")

    async def refuse_async(url, *args, **kwargs):
        refuse(url)

    for module, names, replacement in (
            (processing_utils, ("ssrf_protected_download", "save_url_to_cache", "unsafe_download"), refuse),
            (processing_utils, ("async_ssrf_protected_get", "async_ssrf_protected_download"), refuse_async),
            (safehttpx, ("get", "async_validate_url"), refuse_async)):
        for name in names:
            setattr(module, name, replacement)


class RequestGuard:
    """ASGI middleware in front of gradio's routes: refuses ``/file=`` and ``/proxy=`` requests for
    another address and request bodies that name one (gradio would fetch it), and admits uploads
    only while :class:`Storage` has room for them."""

    BODY_LIMIT = 2**20  # bytes of a JSON request body read for the check; larger ones are refused

    def __init__(self, app, storage: Storage | None = None):
        self.app, self.storage = app, storage

    @staticmethod
    async def _reply(send, status: int, message: str) -> None:
        body = json.dumps({"detail": message, "error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        for marker in ("/file=", "/proxy="):
            if marker in path and _remote(path.split(marker, 1)[1]):
                return await self._reply(send, 403, NO_FETCH)
        headers = dict(scope.get("headers") or [])
        if method == "POST" and path.rstrip("/").endswith("/upload") and self.storage is not None:
            try:
                size = int(headers.get(b"content-length", b""))
            except ValueError:
                return await self._reply(send, 411, "An upload must say its length (Content-Length).")
            refusal = self.storage.admit(size)
            if refusal:
                return await self._reply(send, 507, refusal)
            try:
                return await self.app(scope, receive, send)
            finally:
                self.storage.release(size)
        if method == "POST" and headers.get(b"content-type", b"").startswith(b"application/json"):
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.BODY_LIMIT:
                    return await self._reply(send, 413, "The request body is too large.")
            body = b"".join(chunks)
            try:
                found = _remote_in(json.loads(body)) if body else None
            except ValueError:
                found = None  # not JSON after all: gradio answers it
            if found:
                return await self._reply(send, 400, f"{found[:200]}: {NO_FETCH}")
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)


@dataclass
class Column:
    name: str
    runtime: str  # the runtime, as runtime_label names it
    parameters: int
    top5: list[tuple[str, float]]
    video: Path | None
    seconds: dict[str, float]
    masks: np.ndarray | None = None


@dataclass
class Report:
    teacher: Column
    student: Column
    notes: list[str] = field(default_factory=list)
    agree_top1: bool = False
    mask_iou: float | None = None
    monitor: dict[str, float] | None = None
    analysed_s: float = 0.0  # the part of the clip the models saw


class Demo:
    """The loaded models and what the UI asks of them."""

    def __init__(self, teacher: str | Path = HERE / "weights" / "teacher",
                 student: str | Path = HERE / "weights" / "student", backend: str = "auto", device: str = "auto",
                 max_upload_mb: float = 200.0, out_dir: str | Path | None = None, keep_s: float = 600.0,
                 onnx_cache: str | Path | None = None, max_stored_mb: float | None = None,
                 max_stored_files: int = 256):
        """``out_dir`` holds what visitors leave (the server points gradio's uploads there too); files
        in it older than ``keep_s`` are deleted, and it holds at most ``max_stored_mb`` (by default
        four uploads' worth) in ``max_stored_files`` files."""
        from emktd.hub import resolve_folder
        from emktd.monitor import MonitorLoadError, load_monitor
        from emktd.predict import Predictor, window_s

        self.teacher = Predictor.load(teacher, "torch", device)
        self.student = Predictor.load(student, backend, device, onnx_cache=onnx_cache)
        if self.teacher.labels != self.student.labels:
            raise SystemExit(f"{teacher} and {student} do not share one label list: the demo compares them class "
                             "for class")
        self.monitor, self.lam, self.monitor_problem = None, 1.0, None
        try:
            monitor = load_monitor(resolve_folder(teacher), self.teacher.config)
            if monitor is None:
                self.monitor_problem = f"{teacher} has no entropy monitor (monitor.json and monitor.safetensors)"
            else:
                self.monitor, self.lam = monitor
        except MonitorLoadError as exc:  # the demo works without it, and says why
            self.monitor_problem = str(exc)
        self.window = max(window_s(self.teacher.config), window_s(self.student.config))
        self._warm_up()
        self.max_bytes = int(max_upload_mb * 2**20)
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="emktd-demo-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, self.out_dir, True)
        stored = int((4 * max_upload_mb if max_stored_mb is None else max_stored_mb) * 2**20)
        self.storage = Storage(self.out_dir, stored, max_stored_files, keep_s)
        # What went differently at start-up, for the page: a damaged graph replaced, the monitor missing.
        self.notices = [*self.student.notes, *self.teacher.notes]
        if self.monitor_problem:
            self.notices.append(f"The entropy view is off: {self.monitor_problem}.")

    def _warm_up(self) -> None:
        """One forward pass of each model and one small overlay video, so that the first request's
        timings are not those of loading kernels and codecs."""
        from emktd.media import write_video
        from emktd.overlay import overlay

        for predictor in (self.teacher, self.student):
            if not predictor.timings:  # a runtime chosen at start-up has run already
                predictor.time_model(NUM_FRAMES, repeats=1)
        frames = overlay(np.zeros((2, 16, 16, 3), np.uint8), np.ones((2, 4, 4), np.float32))
        with tempfile.TemporaryDirectory() as tmp:
            write_video(Path(tmp) / "warm.mp4", frames, 2.0, np.zeros(1600, np.float32), 16000,
                        options={"preset": "ultrafast"})

    # ------------------------------------------------------------------ the work

    def check_upload(self, path) -> Path:
        if path is None or str(path) == "":
            raise InputError("Upload a video clip (or pick an example) first.")
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path.name}: the file is not there any more; upload it again.")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"{path.name}: the file is empty (0 bytes); expected a video clip.")
        if size > self.max_bytes:
            raise InputError(f"{path.name}: {size / 2**20:.1f} MB is over the {self.max_bytes / 2**20:.0f} MB upload "
                             "limit; upload a shorter or smaller clip.")
        return path

    def analyze(self, path) -> Report:
        """Decode, run both models, compare them. Bad input raises InputError (the message says why)."""
        from emktd.media import MediaError
        from emktd.models import MODALITIES
        from emktd.overlay import predict_with_overlay
        from emktd.predict import decode, mask_iou

        path = self.check_upload(path)
        try:
            clip, decode_s = decode(path, NUM_FRAMES, self.window, MAX_SIDE)
        except MediaError as exc:
            raise InputError(f"{path.name}: {exc.reason}") from None
        width, height = clip.source_size
        if min(width, height) < MIN_SIDE:
            raise InputError(f"{path.name}: the video is {width}x{height} pixels; the models need a picture of at "
                             f"least {MIN_SIDE}x{MIN_SIDE}.")
        notes = self._notes(clip)
        self.storage.sweep()
        request = self.out_dir / "requests" / uuid.uuid4().hex[:12]
        with self.storage.lock:  # not while a sweep removes the empty "requests" folder
            request.mkdir(parents=True)
        columns = []
        for name, predictor in (("teacher", self.teacher), ("student", self.student)):
            prediction, video = predict_with_overlay(predictor, clip, self.window, request / f"{name}.mp4")
            seconds = {"decode": decode_s, **prediction.seconds}
            columns.append((Column(name, runtime_label(predictor), predictor.parameters, prediction.top(5), video, seconds,
                                   prediction.masks), prediction))
        (teacher, t_pred), (student, s_pred) = columns
        report = Report(teacher, student, notes, teacher.top5[0][0] == student.top5[0][0], analysed_s=clip.duration_s)
        if teacher.masks is not None and student.masks is not None:
            report.mask_iou = mask_iou(teacher.masks, student.masks)
        if self.monitor is not None:
            weights = self.monitor.weights(t_pred.tokens, self.lam)
            report.monitor = {m: float(weights[m].mean()) for m in MODALITIES if m in weights}
        return report

    def _notes(self, clip) -> list[str]:
        notes = []
        if not clip.has_audio:
            reason = next((n for n in clip.notes if "audio" in n), "no audio track; using silence")
            notes.append(f"No usable sound ({reason}): both models hear silence, so their sound-event scores rest "
                         "on the picture alone.")
        if clip.source_duration_s > self.window + 0.5:
            notes.append(f"The clip is {_duration(clip.source_duration_s)} long; the models analyse its first "
                         f"{self.window:.1f} s (their audio window).")
        elif clip.source_duration_s < self.window - 0.5:
            notes.append(f"The clip is {clip.duration_s:.1f} s long, shorter than the models' {self.window:.1f} s "
                         "audio window: the rest is padded with silence.")
        if clip.video_end_s is not None:
            notes.append(f"The video track ends at {clip.video_end_s:.2f} s, before the sound: its last frame "
                         f"stands for the rest of the {clip.duration_s:.1f} s analysed.")
        width, height = clip.source_size
        if max(width, height) > LARGE_SIDE:
            h, w = clip.frames.shape[1:3]
            notes.append(f"The video is {width}x{height}; its frames were decoded downscaled to {w}x{h}.")
        if clip.skipped_packets:
            notes.append(f"{clip.skipped_packets} corrupt packet(s) were skipped while decoding.")
        return notes  # load_clip's other notes (segment end, skipped packets) are covered above

    # ------------------------------------------------------------------ what the UI shows

    OUTPUTS = OUTPUTS

    def handle(self, path) -> tuple:
        """The UI's event handler: never raises; bad input comes back as a message in ``status``.
        Every piece of text that comes from the visitor (a file name, what the decoder said of the
        file) is escaped before it goes into the page."""
        try:
            report = self.analyze(path)
        except InputError as exc:
            return outputs(status=f"**Cannot use this file.** {escape(exc)}")
        except Exception as exc:  # keep serving: say what happened, log the rest
            traceback.print_exc()
            return outputs(status=f"**Something went wrong while analysing this clip** ({type(exc).__name__}: "
                                  f"{escape(exc)}). The server keeps running; try another clip.")
        status = f"Analysed {report.analysed_s:.1f} s of the clip ({NUM_FRAMES} frames)."
        if report.notes:
            status += "\n\n" + "\n".join(f"- **Note:** {escape(n)}" for n in report.notes)
        t, s = report.teacher, report.student
        if report.agree_top1:
            agreement = f"**Top-1 agrees:** both say *{escape(t.top5[0][0])}*."
        else:
            agreement = f"**Top-1 differs:** teacher *{escape(t.top5[0][0])}*, student *{escape(s.top5[0][0])}*."
        if report.mask_iou is not None:
            agreement += (f"\n\n**Mask IoU, teacher vs student:** {report.mask_iou:.2f} over {NUM_FRAMES} frames. "
                          f"{MASK_IOU_HELP}")
        agreement += f"\n\nThe student has {s.parameters / t.parameters:.1%} of the teacher's parameters."
        return outputs(status=status, agreement=agreement, monitor=monitor_text(report.monitor),
                       **{f"{c.name}_{part}": value for c in (t, s) for part, value in
                          (("label", dict(c.top5)), ("video", _path(c.video)), ("info", _info(c)))})


MASK_IOU_HELP = ("It says how far the two models mark the same pixels as the sounding object: 1 when their masks "
                 "are the same, 0 when they share no pixel.")
RUNTIME_HELP = ("Time this request took on this server, stage by stage: decoding the clip, computing the "
                "model's inputs, the network itself (run by the library named above), and writing the overlay "
                "video.")
MONITOR_HELP = ("How much EM-KTD trusts each of the teacher's token sets on this clip: a linear probe reads "
                "the tokens, and the more certain it is of the class, the nearer the weight is to 1 (exp(-λ·H) "
                "of the probe's entropy H). In distillation the student copies each modality's tokens in "
                "proportion to its weight. Each weight stands on its own: they are not shares of a whole.")
MODALITY_NAMES = {"audio": "audio tokens", "visual": "visual tokens", "fused": "fused (audio-visual) tokens"}


def monitor_text(weights: dict[str, float] | None) -> str:
    """The entropy monitor's weights as the page shows them: one row per modality, a bar of 0 to 1."""
    if not weights:
        return ""
    rows = "\n".join(f"| {MODALITY_NAMES.get(m, m)} | {w:.2f} | `{'█' * round(20 * w)}{'·' * (20 - round(20 * w))}` |"
                     for m, w in weights.items())
    return f"| the teacher's | trust (0 to 1) | |\n|---|---:|---|\n{rows}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _path(path: Path | None) -> str | None:
    return str(path) if path is not None else None


RUNTIMES = {"torch": "torch", "onnx": "onnxruntime"}


def runtime_label(predictor) -> str:
    """The predictor's runtime and, where it was chosen at start-up, both runtimes' timings."""
    label = RUNTIMES[predictor.backend]
    if len(predictor.timings) > 1:
        label += " (the faster here: " + ", ".join(
            f"{RUNTIMES[b]} {1000 * s:.1f} ms" for b, s in sorted(predictor.timings.items(), key=lambda item: item[1])
        ) + " a forward pass, measured at start-up)"
    return label


def _info(column: Column) -> str:
    rows = "\n".join(f"| {stage} | {1000 * s:.0f} |" for stage, s in column.seconds.items())
    total = sum(column.seconds.values())
    return (f"**{column.name}** · {column.runtime} · {column.parameters:,} parameters\n\n{RUNTIME_HELP}\n\n"
            f"| stage | ms |\n|---|---:|\n{rows}\n| **total** | **{1000 * total:.0f}** |")


# ------------------------------------------------------------------ the page

INTRO = """# emktd: teacher and EM-KTD student, side by side
Upload a short video with sound (or pick an example). Both models name the sound event and
segment the sounding object on {frames} frames of the clip's first {window:.1f} s. The student was
distilled from the teacher with Entropy-Monitored Kernelized Token Distillation."""

ABOUT = """**What the models know:** {count} classes of sounding things (animals, instruments, everyday
objects), and nothing else. Both were trained by this project on its own benchmark only: real
recordings and drawings or photographs of each kind, from Debian packages, one to five of each,
composited into 5 s clips over background photographs.{prior} A clip of anything else still gets a
best guess among these {count} classes, and on things unlike their training pictures the models
are often wrong: the scores say which class fits best, not that it is there."""
PRIOR = (" The teacher's picture branch starts from a network pretrained on ImageNet's photographs "
         "({backbone}), so it knows more about photographs than the benchmark shows; the student learnt "
         "from the teacher.")

CROP_HELP = ("The models see the centre square of each frame (the part outside it is dimmed in the "
             "overlay videos): an object outside the square gets no mask.")

MODES = {"clean": "sound and picture", "audio": "only the sound tells", "visual": "only the picture tells",
         "multi": "two sounding objects", "photo": "a photograph and its sound"}


def example_label(path: str | Path) -> str:
    """An example's name as the page shows it, from its file name (``SOUNDING-...-MODE[-new]``)."""
    parts = Path(path).stem.split("-")
    new = parts[-1] == "new"
    parts = parts[:-1] if new else parts
    *sounding, mode = parts if len(parts) > 1 else (*parts, "")
    label = " + ".join(name.replace("_", " ") for name in sounding)
    if mode:
        label += f" · {MODES.get(mode, mode)}"
    return label + (" · new instance" if new else "")



def examples() -> list[str]:
    return sorted(str(p) for p in EXAMPLES.glob("*.mp4"))


# Files over the limit are stopped in the browser, before the upload, with a message that names
# them (the server's own limit, the same, stays as the guard behind it).
UPLOAD_LIMIT_SCRIPT = """<script>
(() => {
  const limit = %(bytes)d, limitText = "%(text)s";
  const box = () => {
    let el = document.getElementById("upload-error");
    const clip = document.getElementById("clip");
    if (!el && clip) {
      el = document.createElement("div");
      el.id = "upload-error";
      el.setAttribute("role", "alert");
      el.style.cssText = "color:#b00020;font-weight:600;margin:0.5em 0";
      clip.before(el);
    }
    return el;
  };
  const check = (files, event) => {
    const big = Array.from(files || []).find((f) => f.size > limit);
    const el = box();
    if (el) el.textContent = big ? `${big.name}: ${(big.size / 1048576).toFixed(1)} MB is over the ${limitText} ` +
      "upload limit; upload a shorter or smaller clip." : "";
    if (big) { event.preventDefault(); event.stopImmediatePropagation(); }
    return Boolean(big);
  };
  document.addEventListener("change", (e) => {
    if (e.target.type === "file" && check(e.target.files, e)) e.target.value = "";
  }, true);
  document.addEventListener("drop", (e) => { if (e.dataTransfer) check(e.dataTransfer.files, e); }, true);
})();
</script>"""


def upload_limit_script(max_bytes: int) -> str:
    return UPLOAD_LIMIT_SCRIPT % {"bytes": max_bytes, "text": f"{max_bytes / 2**20:g} MB"}


def build_ui(demo: Demo, concurrency: int = 2):
    import gradio as gr

    shown = {}  # the output components, by their names in OUTPUTS
    literal = {"latex_delimiters": []}  # text shown as written: no $$...$$ typesetting of a file name
    labels = demo.teacher.labels
    # The examples are served from examples/ as they are: gradio copies no file of the app's own
    # into the folder of visitors' files, whose sweep would delete it.
    clips = examples()
    gr.set_static_paths(clips)
    with gr.Blocks(title="emktd demo") as ui:
        gr.Markdown(INTRO.format(frames=NUM_FRAMES, window=demo.window), elem_id="intro")
        backbone = demo.teacher.config.visual_backbone
        prior = PRIOR.format(backbone=backbone) if backbone else ""
        gr.Markdown(ABOUT.format(count=len(labels), prior=prior), elem_id="about")
        with gr.Accordion(f"the {len(labels)} classes", open=False, elem_id="classes"):
            gr.Markdown(", ".join(escape(label.replace("_", " ")) for label in labels), **literal)
        if demo.notices:
            gr.Markdown("\n".join(f"- **Note:** {escape(n)}" for n in demo.notices), elem_id="notices", **literal)
        with gr.Row():
            with gr.Column(scale=1):
                clip = gr.Video(label="clip", sources=["upload"], elem_id="clip", height=300)
                run = gr.Button("Analyse", variant="primary", elem_id="run")
                if clips:
                    gr.Examples(clips, inputs=clip,
                                label="examples: clips of the benchmark's test split, and photographs with its recordings",
                                example_labels=[example_label(p) for p in clips], elem_id="examples",
                                examples_per_page=max(10, len(clips)))  # all on one page
            with gr.Column(scale=1):
                shown["status"] = gr.Markdown(elem_id="status", **literal)
                shown["agreement"] = gr.Markdown(elem_id="agreement", **literal)
                gr.Markdown("### Entropy monitor: the trust distillation gives each modality")
                if demo.monitor is not None:
                    gr.Markdown(MONITOR_HELP, elem_id="monitor-help", **literal)
                else:
                    gr.Markdown(f"**The entropy view is off:** {escape(demo.monitor_problem)}.", elem_id="monitor-help",
                                **literal)
                shown["monitor"] = gr.Markdown(elem_id="monitor", **literal)
        gr.Markdown(CROP_HELP, elem_id="crop-help")
        with gr.Row():
            for name in ("teacher", "student"):
                with gr.Column():
                    gr.Markdown(f"## {name.capitalize()}")
                    shown[f"{name}_label"] = gr.Label(num_top_classes=5, label=f"{name}: top-5 sound events",
                                                      elem_id=f"{name}-label")
                    shown[f"{name}_video"] = gr.Video(label=f"{name}: sounding object", elem_id=f"{name}-video",
                                                      interactive=False, height=300)
                    shown[f"{name}_info"] = gr.Markdown(elem_id=f"{name}-info", **literal)
        run.click(demo.handle, inputs=clip, outputs=[shown[name] for name in OUTPUTS], api_name="analyse",
                  concurrency_limit=concurrency)
    return ui.queue(default_concurrency_limit=concurrency, max_size=64)


def _number(kind, low, high):
    """An option's converter: a finite ``kind`` from ``low`` to ``high``, or a message saying what it takes."""
    takes = f"a {'whole ' if kind is int else ''}number from {low:g} to {high:g}"

    def convert(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {takes}, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected {takes}, got {text}")
        return value

    return convert


def _device(text: str) -> str:
    if text in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address of this machine to serve on (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=_number(int, 1, 65535), default=7860, help="port to serve on (1 to 65535)")
    p.add_argument("--teacher", default=str(HERE / "weights" / "teacher"),
                   help="teacher: a model folder, or a Hub repo written hf://owner/name (owner/name too, where no "
                        "local folder 'owner' exists); runs through torch")
    p.add_argument("--student", default=str(HERE / "weights" / "student"),
                   help="student: a model folder or a Hub repo, as for --teacher")
    p.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="the student's runtime: the faster of the two, measured at start-up (auto), onnxruntime "
                        "(model.onnx, exported when missing, stale or damaged) or torch")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto, cpu, cuda or cuda:N (onnxruntime takes CUDA when it has it)")
    p.add_argument("--max-upload-mb", type=_number(float, 0.1, 100_000), default=200.0,
                   help="largest upload accepted, in MB (0.1 to 100000)")
    p.add_argument("--max-stored-mb", type=_number(float, 0.1, 1_000_000), default=None,
                   help="most the server keeps of visitors' uploads and outputs at once, in MB (default: four "
                        "uploads' worth); an upload that would go over it is refused until older files go")
    p.add_argument("--max-stored-files", type=_number(int, 1, 1_000_000), default=256,
                   help="most files the server keeps of visitors' uploads and outputs at once")
    p.add_argument("--keep-minutes", type=_number(float, 0.1, 10_080), default=10.0,
                   help="each upload and each request's outputs are deleted this long after they were written")
    p.add_argument("--concurrency", type=_number(int, 1, 64), default=2,
                   help="requests analysed at once (1 to 64); the rest wait in a queue")
    return p


HOST_ADVICE = "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"


def address_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port``, in the options' terms; None when it can."""
    import errno

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"--host {host}: not a known address ({exc.strerror}); {HOST_ADVICE}"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"--port {port}: already in use on {host} (another server?); pick a free port, e.g. --port {port + 1}"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"--host {host}: not an address of this machine; {HOST_ADVICE}"
            if exc.errno == errno.EACCES:
                return f"--port {port}: this user may not serve on it (ports below 1024 need root); pick one from 1024 up"
            return f"--host {host} --port {port}: cannot serve there ({exc.strerror})"
    return None


def check_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What the option types alone cannot check, before the models load; a problem ends the program
    with a message naming the option."""
    if args.max_stored_mb is not None and args.max_stored_mb < args.max_upload_mb:
        p.error(f"--max-stored-mb: expected at least --max-upload-mb ({args.max_upload_mb:g}), got "
                f"{args.max_stored_mb:g}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error(f"--device {args.device}: no CUDA GPU is available here; use --device cpu (or auto)")
        index = int(args.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            p.error(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                    f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    problem = address_problem(args.host, args.port)
    if problem:
        p.error(problem)


def sweep_every(storage: Storage, stop: threading.Event) -> threading.Thread:
    """Run ``storage.sweep`` every few seconds until ``stop`` is set."""
    interval = min(30.0, max(1.0, storage.keep_s / 10))

    def run():
        while not stop.wait(interval):
            try:
                storage.sweep()
            except OSError as exc:  # a file that vanished or a full disk: say so, keep serving
                print(f"sweeping {storage.root}: {exc}", flush=True)

    thread = threading.Thread(target=run, name="storage-sweep", daemon=True)
    thread.start()
    return thread


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, a service manager, a closed terminal


def main(argv=None) -> None:
    p = parser()
    args = p.parse_args(argv)
    check_options(p, args)
    from emktd.hub import ModelLoadError

    # One folder for everything the server writes (visitors' uploads, each request's outputs),
    # removed when it stops, by Ctrl-C, SIGTERM (how services are stopped) or SIGHUP (a closed terminal).
    workdir = Path(tempfile.mkdtemp(prefix="emktd-demo-"))
    files = workdir / "files"
    os.environ["GRADIO_TEMP_DIR"] = str(files)  # gradio's uploads land where the bound and the sweep apply
    stop = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        demo = Demo(args.teacher, args.student, args.backend, args.device, args.max_upload_mb, out_dir=files,
                    keep_s=60 * args.keep_minutes, max_stored_mb=args.max_stored_mb,
                    max_stored_files=args.max_stored_files)
        print(f"teacher: {demo.teacher.parameters:,} parameters (torch); student: {demo.student.parameters:,} "
              f"parameters ({runtime_label(demo.student)})", flush=True)
        for notice in demo.notices:
            print(notice, flush=True)
        from starlette.middleware import Middleware

        close_remote_fetches()
        ui = build_ui(demo, args.concurrency)
        sweep_every(demo.storage, stop)
        try:
            ui.launch(server_name=args.host, server_port=args.port, max_file_size=demo.max_bytes, show_error=True,
                      head=upload_limit_script(demo.max_bytes), prevent_thread_lock=True,
                      app_kwargs={"middleware": [Middleware(RequestGuard, storage=demo.storage)]})
        except OSError as exc:  # the port was taken between the check and the start
            raise SystemExit(f"--host {args.host} --port {args.port}: cannot serve there "
                             f"({str(exc).splitlines()[0]})") from None
        while not stop.wait(0.5):
            pass
        for sig in STOP_SIGNALS:  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        print("stopping the server", flush=True)
        ui.close()
    except ModelLoadError as exc:
        raise SystemExit(f"cannot load the models: {exc}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0)  # the web server's threads may still wait on open connections: nothing is left to save


if __name__ == "__main__":
    main()
