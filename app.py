"""The emktd demo: a teacher and its EM-KTD student, side by side, on an uploaded clip.

    python app.py                      # http://127.0.0.1:7860 with weights/teacher and weights/student
    python app.py --help

For each model: the top-5 sound events, the sounding object segmented on the sampled frames
(an H.264 overlay video that plays in the browser), the time of each stage and the parameter
count; beside them, whether the two agree and how much the entropy monitor trusts each
modality of the clip.  Models load once, at start-up; :meth:`Demo.handle` is a plain
function of the uploaded file's path (the tests call it without a browser).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
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
                "agreement": "markdown", "monitor": "label"}
OUTPUTS = tuple(OUTPUT_KINDS)


def outputs(**values) -> tuple:
    """The handler's return value: ``values`` in OUTPUTS order, the rest empty."""
    unknown = set(values) - set(OUTPUTS)
    assert not unknown, f"not outputs of the page: {unknown}"
    return tuple(values.get(name, "" if OUTPUT_KINDS[name] == "markdown" else None) for name in OUTPUTS)


class InputError(ValueError):
    """An upload the demo cannot use; the message says why, in the user's terms."""


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
                 max_upload_mb: float = 200.0, out_dir: str | Path | None = None, keep_outputs_s: float = 3600.0,
                 onnx_cache: str | Path | None = None):
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
        self.keep_outputs_s = keep_outputs_s
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="emktd-demo-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, self.out_dir, True)
        self.lock = threading.Lock()  # pruning of old outputs

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
        self._prune()
        request = self.out_dir / uuid.uuid4().hex[:12]
        request.mkdir()
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
        width, height = clip.source_size
        if max(width, height) > LARGE_SIDE:
            h, w = clip.frames.shape[1:3]
            notes.append(f"The video is {width}x{height}; its frames were decoded downscaled to {w}x{h}.")
        if clip.skipped_packets:
            notes.append(f"{clip.skipped_packets} corrupt packet(s) were skipped while decoding.")
        return notes  # load_clip's other notes (segment end, skipped packets) are covered above

    def _prune(self) -> None:
        """Delete the outputs of requests older than keep_outputs_s (the UI has long shown them)."""
        cutoff = time.time() - self.keep_outputs_s
        with self.lock:
            for folder in self.out_dir.iterdir():
                try:
                    if folder.stat().st_mtime < cutoff:
                        shutil.rmtree(folder, ignore_errors=True)
                except FileNotFoundError:
                    pass

    # ------------------------------------------------------------------ what the UI shows

    OUTPUTS = OUTPUTS

    def handle(self, path) -> tuple:
        """The UI's event handler: never raises; bad input comes back as a message in ``status``."""
        try:
            report = self.analyze(path)
        except InputError as exc:
            return outputs(status=f"**Cannot use this file.** {exc}")
        except Exception as exc:  # keep serving: say what happened, log the rest
            traceback.print_exc()
            return outputs(status=f"**Something went wrong while analysing this clip** ({type(exc).__name__}: "
                                  f"{exc}). The server keeps running; try another clip.")
        status = f"Analysed {report.analysed_s:.1f} s of the clip ({NUM_FRAMES} frames)."
        if report.notes:
            status += "\n\n" + "\n".join(f"- **Note:** {n}" for n in report.notes)
        t, s = report.teacher, report.student
        if report.agree_top1:
            agreement = f"**Top-1 agrees:** both say *{t.top5[0][0]}*."
        else:
            agreement = f"**Top-1 differs:** teacher *{t.top5[0][0]}*, student *{s.top5[0][0]}*."
        if report.mask_iou is not None:
            agreement += f"\n\n**Mask IoU, teacher vs student:** {report.mask_iou:.2f} over {NUM_FRAMES} frames."
        agreement += f"\n\nThe student has {s.parameters / t.parameters:.1%} of the teacher's parameters."
        return outputs(status=status, agreement=agreement, monitor=report.monitor,
                       **{f"{c.name}_{part}": value for c in (t, s) for part, value in
                          (("label", dict(c.top5)), ("video", _path(c.video)), ("info", _info(c)))})


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
    return (f"**{column.name}** · {column.runtime} · {column.parameters:,} parameters\n\n"
            f"| stage | ms |\n|---|---:|\n{rows}\n| **total** | **{1000 * total:.0f}** |")


# ------------------------------------------------------------------ the page

INTRO = """# emktd: teacher and EM-KTD student, side by side
Upload a short video with sound (or pick an example). Both models name the sound event and
segment the sounding object on {frames} frames of the clip's first {window:.1f} s. The student was
distilled from the teacher with Entropy-Monitored Kernelized Token Distillation."""

MONITOR_HELP = ("The entropy monitor: a linear probe on each of the teacher's token sets; weight "
                "exp(-λ·H) of the probe's entropy H, 1 when the probe is certain. EM-KTD distils each "
                "modality's tokens in proportion to it.")


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
    with gr.Blocks(title="emktd demo", delete_cache=(900, 3600)) as ui:
        gr.Markdown(INTRO.format(frames=NUM_FRAMES, window=demo.window))
        with gr.Row():
            with gr.Column(scale=1):
                clip = gr.Video(label="clip", sources=["upload"], elem_id="clip", height=300)
                run = gr.Button("Analyse", variant="primary", elem_id="run")
                if examples():
                    gr.Examples(examples(), inputs=clip, label="examples from the benchmark's test split")
            with gr.Column(scale=1):
                shown["status"] = gr.Markdown(elem_id="status")
                shown["agreement"] = gr.Markdown(elem_id="agreement")
                shown["monitor"] = gr.Label(label="entropy monitor: trust per modality", elem_id="monitor")
                gr.Markdown(MONITOR_HELP if demo.monitor is not None else
                            f"**The entropy view is off:** {demo.monitor_problem}.", elem_id="monitor-help")
        with gr.Row():
            for name in ("teacher", "student"):
                with gr.Column():
                    gr.Markdown(f"## {name.capitalize()}")
                    shown[f"{name}_label"] = gr.Label(num_top_classes=5, label=f"{name}: top-5 sound events",
                                                      elem_id=f"{name}-label")
                    shown[f"{name}_video"] = gr.Video(label=f"{name}: sounding object", elem_id=f"{name}-video",
                                                      interactive=False, height=300)
                    shown[f"{name}_info"] = gr.Markdown(elem_id=f"{name}-info")
        run.click(demo.handle, inputs=clip, outputs=[shown[name] for name in OUTPUTS], api_name="analyse",
                  concurrency_limit=concurrency)
    return ui.queue(default_concurrency_limit=concurrency, max_size=64)


def _positive(kind):
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
        return value

    return convert


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {port}")
    return port


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_port, default=7860, help="port to serve on")
    p.add_argument("--teacher", default=str(HERE / "weights" / "teacher"),
                   help="teacher: a model folder or a Hub repo id (runs through torch)")
    p.add_argument("--student", default=str(HERE / "weights" / "student"), help="student: a model folder or a Hub repo id")
    p.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="the student's runtime: the faster of the two, measured at start-up (auto), onnxruntime "
                        "(model.onnx, exported when missing or stale) or torch")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (onnxruntime takes CUDA when it has it)")
    p.add_argument("--max-upload-mb", type=_positive(float), default=200.0, help="largest upload accepted, in MB")
    p.add_argument("--concurrency", type=_positive(int), default=2,
                   help="requests analysed at once; the rest wait in a queue")
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    from emktd.hub import ModelLoadError

    # One folder for everything the server writes (request outputs, gradio's copies of uploads),
    # removed when it stops, by Ctrl-C or by SIGTERM (how services are stopped).
    workdir = Path(tempfile.mkdtemp(prefix="emktd-demo-"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(workdir / "gradio"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        demo = Demo(args.teacher, args.student, args.backend, args.device, args.max_upload_mb,
                    out_dir=workdir / "requests")
        print(f"teacher: {demo.teacher.parameters:,} parameters (torch); student: {demo.student.parameters:,} "
              f"parameters ({runtime_label(demo.student)})", flush=True)
        if demo.monitor_problem:
            print(f"the entropy view is off: {demo.monitor_problem}", flush=True)
        ui = build_ui(demo, args.concurrency)
        ui.launch(server_name=args.host, server_port=args.port, max_file_size=demo.max_bytes, show_error=True,
                  head=upload_limit_script(demo.max_bytes), prevent_thread_lock=True)
        while not stop.wait(0.5):
            pass
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the clean-up short
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
