"""training/distill.py end to end on a --small benchmark: every method, bad configurations,
resume after a kill, two DDP processes, publishing."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.experiments import publish
from training.run import config as cfg
from training.run import methods
from training.run import pipeline as distill
from training.run import teacher as engine
from training.run.probes import RunMonitor
from emktd.hub import load_pretrained
from emktd.models import create_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "distill.py"


def args(small_bench, teacher_dir, out, *extra):
    return ["--data-root", str(small_bench), "--teacher", str(teacher_dir), "--out", str(out), "--epochs", "1",
            "--batch-size", "4", "--probe-epochs", "2", "--log-every", "1", "--workers", "0", *extra]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_distill_end_to_end(small_bench, teacher_dir, tmp_path):
    run = tmp_path / "run"
    result = distill.main(args(small_bench, teacher_dir, run))
    saved = json.loads((run / "config.json").read_text())
    assert saved["method"] == "emktd+kd" and saved["resolved"]["beta"] == 666.0 and saved["resolved"]["kd"]
    train = [r for r in records(run) if r["type"] == "train"]
    assert len(train) == 3 and {"cls", "seg", "kd", "distill", "w_audio", "w_visual", "w_fused"} <= set(train[0])
    assert all(0 < r["w_audio"] <= 1 for r in train)
    for name in ("metrics.json", "manifest.json", "monitor.safetensors", "loss.png", "em_weights.png",
                 "checkpoints/last.pt", "student/model.safetensors"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    # the test split: 6 seen-instance clips and 4 of new instances, reported together and apart
    assert metrics["student"]["clips"] == 10 and {"top1", "mAP", "mIoU", "legacy_fscore", "fscore"} <= set(metrics["student"])
    groups = metrics["student"]["by_group"]
    assert {name: g["clips"] for name, g in groups.items()} == {"seen": 6, "new": 4}
    assert all({"top1", "top1_by_mode", "segmentation_by_part"} <= set(g) for g in groups.values())
    assert groups["seen"]["segmentation_by_part"]["S4"]["frames"] + groups["new"]["segmentation_by_part"].get(
        "S4", {"frames": 0})["frames"] == metrics["student"]["segmentation_by_part"]["S4"]["frames"]
    assert set(metrics["teacher"]["em_weights_by_mode"]) <= {"clean", "audio", "visual", "multi"}
    for part in ("train", "held_out"):  # the monitor's probes, as trained, with their accuracy and entropy
        assert set(metrics["probes"][part]) == {"audio", "visual", "fused"}
        assert all(0 <= r["accuracy"] <= 1 and r["entropy"] >= 0 for r in metrics["probes"][part].values())
    parts = metrics["student"]["segmentation_by_part"]
    assert set(parts) == {"S4", "MS3"} and parts["S4"]["frames"] + parts["MS3"]["frames"] == metrics["student"]["frames"]
    assert metrics == result
    # The saved student is the trained one.
    assert engine.state_digest(load_pretrained(run / "student")) == (run / "final_student_sha256.txt").read_text().strip()


def test_entropy_monitor_published_beside_the_teacher(small_bench, teacher_dir, tmp_path):
    from safetensors.torch import load_file

    from emktd.monitor import load_monitor

    run = tmp_path / "run"
    distill.main(args(small_bench, teacher_dir, run, "--method", "emktd", "--stop-after-steps", "1", "--lam", "0.5"))
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "README.md").write_text("# teacher\n")
    out = publish.write_monitor(run, tmp_path / "teacher")
    publish.write_monitor(run, tmp_path / "teacher")  # twice: the card gains one section
    assert (out / "README.md").read_text().count("## Entropy monitor") == 1
    monitor, lam = load_monitor(out, load_pretrained(teacher_dir).config)
    assert lam == 0.5 and monitor.task == "classification"
    probes = load_file(str(run / "monitor.safetensors"))
    assert all(torch.equal(v, probes[k]) for k, v in monitor.state_dict().items())
    kd_run = tmp_path / "kd"
    distill.main(args(small_bench, teacher_dir, kd_run, "--method", "kd", "--stop-after-steps", "1"))
    with pytest.raises(SystemExit, match="only EM-KTD runs"):
        publish.write_monitor(kd_run, tmp_path / "t2")


def test_run_monitor_weights_per_sample_per_fold_or_static():
    from emktd.monitor import EntropyMonitor
    from training.run.probes import fold_of

    assert fold_of("clip7#3", 5) == fold_of("clip7", 5) == fold_of("clip7#0", 5)  # a clip's frames share its fold
    assert len({fold_of(f"c{i}", 3) for i in range(30)}) == 3
    torch.manual_seed(0)
    monitors = [EntropyMonitor(8, 4) for _ in range(3)]
    tokens = {m: torch.randn(6, 5, 8) for m in ("audio", "visual", "fused")}
    keys = [f"c{i}#0" for i in range(6)]
    folded = RunMonitor(monitors[0], monitors[1:]).weights(tokens, 1.0, keys)
    for i, key in enumerate(keys):
        own = monitors[1 + fold_of(key, 2)].weights({m: t[i:i + 1] for m, t in tokens.items()}, 1.0)
        assert all(torch.allclose(folded[m][i], own[m][0]) for m in own)
    # without keys (evaluation) the monitor fitted on every clip answers
    plain = RunMonitor(monitors[0], monitors[1:]).weights(tokens, 1.0)
    assert all(torch.equal(plain[m], monitors[0].weights(tokens, 1.0)[m]) for m in plain)
    # a sample no probe fitted on (a transfer-pool clip: no key) reads the whole monitor, the others their fold
    mixed = RunMonitor(monitors[0], monitors[1:]).weights(tokens, 1.0, [None, *keys[1:]])
    assert all(torch.equal(mixed[m][0], plain[m][0]) and torch.equal(mixed[m][1:], folded[m][1:]) for m in mixed)
    static = RunMonitor(monitors[0], static={"audio": 0.5, "visual": 0.25, "fused": 0.125}).weights(tokens, 1.0, keys)
    assert static["visual"].tolist() == [0.25] * 6 and static["fused"].shape == (6,)


def test_static_and_cross_fitted_monitors_in_a_run(small_bench, teacher_dir, tmp_path):
    from emktd.monitor import load_monitor

    folded = tmp_path / "folded"
    distill.main(args(small_bench, teacher_dir, folded, "--method", "emktd+kd", "--monitor-folds", "2",
                      "--stop-after-steps", "1"))
    probes = next(r for r in records(folded) if r["type"] == "probes")
    assert probes["folds"] == 2 and set(probes["out_of_fold"]) == {"audio", "visual", "fused"}
    assert all(0 <= r["accuracy"] <= 1 and r["entropy"] > 0 for r in probes["out_of_fold"].values())
    assert (folded / "monitor-folds.safetensors").is_file()
    saved = json.loads((folded / "monitor.json").read_text())["train_mean_weights"]
    assert saved == probes["mean_weights"] and all(0 < w <= 1 for w in saved.values())
    assert load_monitor(folded, load_pretrained(teacher_dir).config) is not None  # the plain probes still load

    static = tmp_path / "static"
    distill.main(args(small_bench, teacher_dir, static, "--method", "emktd-static+kd", "--stop-after-steps", "2",
                      "--log-every", "1"))
    means = json.loads((static / "monitor.json").read_text())["train_mean_weights"]
    steps = [r for r in records(static) if r["type"] == "train"]
    for m in ("audio", "visual", "fused"):  # every sample carries the mean weight on train
        assert all(r[f"w_{m}"] == pytest.approx(means[m], rel=1e-6) for r in steps)
    fails_fast(args(small_bench, teacher_dir, tmp_path / "bad", "--monitor-folds", "1"), "at least 2 folds",
               tmp_path / "bad")


def test_a_multitask_run_can_monitor_with_segmentation_probes(small_bench, teacher_dir, tmp_path):
    run = tmp_path / "segmon"
    distill.main(args(small_bench, teacher_dir, run, "--method", "emktd+kd", "--monitor", "segmentation",
                      "--stop-after-steps", "1"))
    assert json.loads((run / "monitor.json").read_text())["task"] == "segmentation"
    step = next(r for r in records(run) if r["type"] == "train")
    assert "seg" in step and "cls" in step and 0 < step["w_visual"] <= 1


@pytest.mark.parametrize("method", methods.names())
def test_every_method_takes_a_step(small_bench, teacher_dir, tmp_path, method):
    run = tmp_path / "run"
    assert distill.main(args(small_bench, teacher_dir, run, "--method", method, "--stop-after-steps", "1")) is None
    step = next(r for r in records(run) if r["type"] == "train")
    base = method.split("+")[0]
    assert ("distill" in step) == (base not in ("none", "kd"))
    assert ("kd" in step) == (method.endswith("+kd") or method == "kd")
    assert ("w_audio" in step) == methods.METHODS[base].uses_monitor == base.startswith("emktd")


def test_low_resolution_student_against_the_teacher_grid(small_bench, teacher_dir, tmp_path):
    run = tmp_path / "run"
    distill.main(args(small_bench, teacher_dir, run, "--student-image-size", "64", "--method", "ktd",
                      "--stop-after-steps", "1"))
    assert json.loads((run / "config.json").read_text())["student_image_size"] == 64
    assert next(r for r in records(run) if r["type"] == "train")["ktd_visual"] > 0


def test_teacher_training(small_bench, tmp_path):
    run = tmp_path / "teacher"
    result = distill.main(["--task", "teacher", "--data-root", str(small_bench), "--out", str(run), "--epochs", "1",
                           "--batch-size", "4", "--workers", "0"])
    assert "teacher" not in result and result["student_parameters"] == load_pretrained(run / "student").num_parameters()


def test_a_teacher_with_the_imagenet_backbone_trains_and_keeps_its_batch_norm_statistics(small_bench, tmp_path):
    from emktd.backbones import EfficientNetLite, load_imagenet_weights

    run = tmp_path / "teacher-in"
    distill.main(["--task", "teacher", "--teacher-preset", "bench-teacher-in", "--data-root", str(small_bench),
                  "--out", str(run), "--epochs", "1", "--batch-size", "4", "--workers", "0",
                  "--seg-skip-channels", "8", "--seg-object-logits", "true"])
    trained = load_pretrained(run / "student")
    assert trained.config.visual_backbone == "efficientnet-lite0"
    assert trained.config.seg_object_logits and trained.mask_decoder.skips.strides == (8, 4, 2)
    imagenet = load_imagenet_weights(EfficientNetLite(up_to_stride=16)).state_dict()
    state = trained.visual_backbone.state_dict()
    assert all(torch.equal(state[k], imagenet[k]) for k in imagenet if "running_" in k)  # frozen statistics
    assert not torch.equal(state["_conv_stem.weight"], imagenet["_conv_stem.weight"])  # fine-tuned weights
    with pytest.raises(SystemExit, match="--teacher-preset 'bench-teacher-xx': expected one of"):
        distill.main(["--task", "teacher", "--teacher-preset", "bench-teacher-xx", "--data-root", str(small_bench),
                      "--out", str(tmp_path / "bad"), "--epochs", "1", "--workers", "0"])


def test_teacher_pretrained_on_the_stream_then_fine_tuned(small_bench, tmp_path):
    common = ["--task", "teacher", "--data-root", str(small_bench), "--epochs", "1", "--batch-size", "4",
              "--workers", "0", "--audio-augment", "0.5", "--image-augment", "0.5", "--modality-dropout", "0.5"]
    pre = tmp_path / "pre"
    distill.main([*common, "--train-source", "stream", "--stream-clips", "8", "--out", str(pre)])
    assert next(r for r in records(pre) if r["type"] == "start")["train_clips"] == 8
    fine = tmp_path / "fine"
    distill.main([*common, "--init-from", str(pre / "student"), "--out", str(fine), "--eval-split", "val",
                  "--lr", "0", "--min-lr", "0"])  # at learning rate 0 the fine-tuned weights are the pretrained ones
    assert engine.state_digest(load_pretrained(fine / "student")) == engine.state_digest(load_pretrained(pre / "student"))
    # fine-tuning with a richer mask decoder: the pretrained weights stay, the decoder's new parts start untrained
    grown = tmp_path / "grown"
    distill.main([*common, "--init-from", str(pre / "student"), "--out", str(grown), "--eval-split", "val",
                  "--lr", "0", "--min-lr", "0", "--seg-skip-channels", "8", "--seg-visual-taps", "3"])
    before, after = load_pretrained(pre / "student").state_dict(), load_pretrained(grown / "student")
    assert load_pretrained(pre / "student").config.tap_blocks == (2, 4)  # the preset's
    assert after.config.seg_skip_channels == 8 and after.config.tap_blocks == (1, 3, 4)
    assert all(torch.equal(v, before[k]) for k, v in after.state_dict().items()
               if not k.startswith("mask_decoder.stages.") and k in before)
    assert {k for k in after.state_dict() if k not in before} >= {"mask_decoder.tap_proj.2.weight",
                                                                   "mask_decoder.skips.down2.0.weight"}
    run = tmp_path / "bad"
    fails_fast([*common, "--init-from", str(pre / "student"), "--seg-visual-taps", "9", "--out", str(run)],
               "seg_visual_taps 9", run)
    fails_fast(["--data-root", str(small_bench), "--train-source", "stream", "--out", str(run)], "--task teacher", run)
    fails_fast([*common, "--init-from", str(tmp_path / "nothing"), "--out", str(run)], "nothing", run)
    fails_fast([*common, "--modality-dropout", "1.5", "--out", str(run)], "at most 1", run)


def test_a_run_fills_the_disk_cache_of_teacher_outputs_then_reads_it(small_bench, teacher_dir, tmp_path):
    cache = ["--teacher-cache-dir", str(tmp_path / "cache"), "--fill-teacher-cache", "true", "--method", "ktd+kd"]
    first = tmp_path / "first"
    distill.main(args(small_bench, teacher_dir, first, *cache, "--stop-after-steps", "1"))
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and len(list(folders[0].glob("*.safetensors"))) == 12 * 5  # every train clip frame
    assert next(r for r in records(first) if r["type"] == "teacher_cache")["filled"] == 60
    second = tmp_path / "second"  # a later run finds every output cached and fills nothing
    distill.main(args(small_bench, teacher_dir, second, *cache, "--stop-after-steps", "1"))
    assert not any(r["type"] == "teacher_cache" for r in records(second))


@pytest.mark.skipif(sys.platform == "win32", reason="advisory file locks are POSIX")
def test_a_run_waits_while_another_fills_the_shared_cache_then_fills_nothing(small_bench, teacher_dir, tmp_path,
                                                                              monkeypatch):
    import fcntl
    import threading

    cache = ["--teacher-cache-dir", str(tmp_path / "cache"), "--fill-teacher-cache", "true", "--method", "ktd+kd"]
    distill.main(args(small_bench, teacher_dir, tmp_path / "first", *cache, "--stop-after-steps", "1"))
    folder = next((tmp_path / "cache").iterdir())
    aside = tmp_path / "aside"
    aside.mkdir()
    for f in folder.glob("*.safetensors"):  # the cache as another run finds it while filling it
        f.rename(aside / f.name)
    real_flock, waits = fcntl.flock, threading.Event()

    def flock(handle, operation):  # says when the second run asks to wait for the lock
        if operation == fcntl.LOCK_EX:
            waits.set()
        return real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    second, failed = tmp_path / "second", []

    def run_second():
        try:
            distill.main(args(small_bench, teacher_dir, second, *cache, "--stop-after-steps", "1"))
        except BaseException as exc:  # reported below
            failed.append(exc)

    with open(folder / engine.FILL_LOCK, "a") as held:  # this test is the run filling the cache
        real_flock(held, fcntl.LOCK_EX)
        thread = threading.Thread(target=run_second)
        thread.start()
        waited = waits.wait(timeout=600)
        for f in aside.iterdir():  # the filling run finishes: every output is in, the lock is let go
            f.rename(folder / f.name)
        real_flock(held, fcntl.LOCK_UN)
    thread.join()
    assert waited, "the second run did not wait for the lock"
    assert not failed, failed
    assert not any(r["type"] == "teacher_cache" for r in records(second))  # it listed what was missing after


def test_a_run_reading_decoded_clips_from_disk_takes_the_same_steps(small_bench, teacher_dir, tmp_path):
    common = ["--method", "kd", "--stop-after-steps", "2", "--image-augment", "0.5"]
    distill.main(args(small_bench, teacher_dir, tmp_path / "files", *common))
    cache = tmp_path / "clips"
    for name in ("filling", "reading"):  # the first fills the cache as it goes, the second reads it back
        distill.main(args(small_bench, teacher_dir, tmp_path / name, *common, "--clip-cache-dir", str(cache)))
        assert len(list(cache.glob("*/*.npz"))) == 2 * 4  # the clips of two batches of four
        expected = [r for r in records(tmp_path / "files") if r["type"] == "train"]
        found = [r for r in records(tmp_path / name) if r["type"] == "train"]
        assert [{k: r[k] for k in ("cls", "seg", "kd")} for r in found] == [
            {k: r[k] for k in ("cls", "seg", "kd")} for r in expected]


def fails_fast(argv, match, run):
    with pytest.raises(SystemExit, match=match):
        distill.main(argv)
    assert not (run / "log.jsonl").is_file() or not any(r["type"] == "train" for r in records(run))


def test_bad_configuration_fails_before_any_step(small_bench, teacher_dir, tmp_path):
    run = tmp_path / "run"
    fails_fast(args(small_bench, teacher_dir, run, "--method", "ktd+magic"), "expected one of", run)
    fails_fast(args(small_bench, teacher_dir, run, "--student-image-size", "48"), "cannot be average-pooled", run)
    fails_fast(args(tmp_path / "elsewhere", teacher_dir, run, "--build-benchmark", "false"), "benchmark is missing", run)
    (tmp_path / "s4").mkdir()
    fails_fast(args(tmp_path / "s4", teacher_dir, run, "--dataset", "avsbench-s4", "--objective", "segmentation"),
               "AVSBench layout", run)
    fails_fast(args(small_bench, tmp_path / "no-teacher", run), "teacher", run)
    fails_fast(["--data-root", str(small_bench), "--teacher", "weights/teacher-that-is-not-there"], "teacher", run)


def test_default_teacher_missing_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(cfg, "REPO", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--task teacher"):
        distill.load_teacher(cfg.RunConfig(), torch.device("cpu"))


def test_resume_with_another_architecture_is_refused(small_bench, teacher_dir, tmp_path):
    run = tmp_path / "run"
    distill.main(args(small_bench, teacher_dir, run, "--stop-after-steps", "1"))
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "seg_decoder_dim": 8}))
    fails_fast(["--out", str(run), "--resume", "true"], "another architecture", tmp_path / "none")


def test_killed_run_resumes_to_the_same_weights(small_bench, teacher_dir, tmp_path):
    # Without the teacher cache: a cached teacher output was computed in another batch than a
    # resumed run recomputes it in, and batched matmuls can differ in the last bit.
    common = ["--epochs", "3", "--batch-size", "2", "--checkpoint-every", "2", "--method", "emktd+kd",
              "--cache-teacher-gb", "0"]
    straight = tmp_path / "straight"
    distill.main(args(small_bench, teacher_dir, straight, *common))
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args(small_bench, teacher_dir, killed, *common)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log = killed / "log.jsonl"
        steps = [r["step"] for r in records(killed) if r["type"] == "train"] if log.is_file() else []
        if steps and max(steps) >= 7:  # mid-way through the second epoch, past a checkpoint
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    checkpoint = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    assert 6 <= checkpoint["state"]["global_step"] < 18
    assert checkpoint["state"]["earlier_seconds"] > 0  # the checkpoint keeps the training time spent so far
    # As if the first sitting had trained 1000 s longer: the resumed record must carry that time over.
    earlier = checkpoint["state"]["earlier_seconds"] = checkpoint["state"]["earlier_seconds"] + 1000
    del checkpoint["architecture"]["visual_backbone"]  # as written before the field existed: still resumes
    torch.save(checkpoint, killed / "checkpoints" / "last.pt")
    started = time.time()
    result = distill.main(["--out", str(killed), "--resume", "true"])
    elapsed = time.time() - started
    assert (killed / "final_student_sha256.txt").read_text() == (straight / "final_student_sha256.txt").read_text()
    resumed = [r for r in records(killed) if r["type"] == "start"]
    assert resumed[-1]["resumed_at"] == checkpoint["state"]["global_step"]
    # The record counts both sittings: the first's training up to its checkpoint, and this one. Both
    # figures are rounded to 0.1 s; this sitting's wall clock holds its training and fits in `elapsed`.
    assert earlier < result["train_seconds"] <= earlier + elapsed + 0.1
    assert result["train_seconds"] - 0.1 <= result["wall_seconds"] <= earlier + elapsed + 0.1


def test_two_processes_end_with_identical_weights(small_bench, teacher_dir, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(SCRIPT),
           *args(small_bench, teacher_dir, run, "--method", "ktd+kd")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    digests = [(run / f"final_student_rank{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    start = next(r for r in records(run) if r["type"] == "start")
    assert start["world_size"] == 2 and start["backend"] == "gloo"
    assert json.loads((run / "metrics.json").read_text())["world_size"] == 2


def test_ranks_take_their_own_gpus_or_share_them_over_gloo():
    from training.run.distributed import placement

    assert [placement(r, 4, 8) for r in range(4)] == [(r, "nccl") for r in range(4)]
    assert [placement(r, 8, 8) for r in range(8)] == [(r, "nccl") for r in range(8)]
    # two ranks on one GPU: NCCL would refuse them
    assert [placement(r, 2, 1) for r in range(2)] == [(0, "gloo"), (0, "gloo")]
    assert [placement(r, 3, 2) for r in range(3)] == [(0, "gloo"), (1, "gloo"), (0, "gloo")]
    with pytest.raises(RuntimeError, match="no GPU"):
        placement(0, 2, 0)


def test_publish_writes_and_uploads_exactly_the_folder(small_bench, teacher_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    distill.main(args(small_bench, teacher_dir, run, "--method", "kd"))
    folder = publish.main([str(run), "--repo-id", "someone/emktd-student", "--dry-run", "--out", str(tmp_path / "hub")])
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "labels.txt", "model.safetensors"]
    card = (folder / "README.md").read_text()
    assert "someone/emktd-student" in card and "GPL-2+" in card and "| teacher |" in card and "| student |" in card
    labels = (folder / "labels.txt").read_text().split("\n")[:-1]
    assert labels == list(load_pretrained(folder).config.labels)

    # The published folder predicts exactly what the run's model predicts.
    model, original = load_pretrained(folder), load_pretrained(run / "student")
    c = model.config
    audio, frames = torch.randn(2, c.audio_frames, c.num_mel_bins), torch.randn(2, 3, c.image_size, c.image_size)
    with torch.no_grad():
        torch.testing.assert_close(model(audio, frames).logits, original(audio, frames).logits, rtol=0, atol=0)

    half = publish.main([str(run), "--repo-id", "someone/emktd-student", "--dry-run", "--fp16",
                         "--out", str(tmp_path / "half")])
    assert (half / "model.safetensors").stat().st_size < 0.6 * (folder / "model.safetensors").stat().st_size
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained(half)(audio, frames).logits, original(audio, frames).logits,
                                   atol=5e-2, rtol=0)

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=False, exist_ok=False, repo_type="model"):
            calls.append(("create", repo_id, private))

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
            calls.append(("upload", repo_id, {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}))
            return type("Info", (), {"commit_url": f"https://hub.invalid/{repo_id}/commit/1"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="HF_TOKEN"):
        publish.main([str(run), "--repo-id", "someone/emktd-student", "--out", str(tmp_path / "hub2")])
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    publish.main([str(run), "--repo-id", "someone/emktd-student", "--private", "--out", str(tmp_path / "hub3")])
    assert calls[-3:-1] == [("token", "hf_test"), ("create", "someone/emktd-student", True)]
    uploaded = calls[-1][2]
    assert set(uploaded) == {"README.md", "config.json", "labels.txt", "model.safetensors"}
    assert all(uploaded[name] == (tmp_path / "hub3" / name).read_bytes() for name in uploaded)


def test_teacher_cache_serves_part_of_a_batch(teacher_dir):
    teacher = load_pretrained(teacher_dir)
    c = teacher.config
    torch.manual_seed(0)
    audio, frames = torch.randn(3, c.audio_frames, c.num_mel_bins), torch.randn(3, 3, c.image_size, c.image_size)
    cache = engine.TeacherCache(1.0)
    first = engine.teacher_outputs(teacher, None, audio[:2], frames[:2], 1.0, ["a", "b"], cache)
    mixed = engine.teacher_outputs(teacher, None, audio[1:], frames[1:], 1.0, ["b", "c"], cache)
    plain = engine.teacher_outputs(teacher, None, audio, frames, 1.0)
    assert (cache.hits, cache.misses) == (1, 3)
    assert torch.equal(mixed["fused"][0], first["fused"][1])  # served from the cache
    for name in ("logits", "audio", "visual", "fused"):
        torch.testing.assert_close(mixed[name], plain[name][1:], atol=2e-2, rtol=1e-2)
    tiny = engine.TeacherCache(1e-6)  # too small for one sample: nothing is kept
    engine.teacher_outputs(teacher, None, audio[:1], frames[:1], 1.0, ["a"], tiny)
    assert not tiny.store


def test_teacher_cache_on_disk_is_reused_and_keyed_by_teacher(teacher_dir, tmp_path):
    from emktd.monitor import EntropyMonitor

    teacher = load_pretrained(teacher_dir)
    c = teacher.config
    torch.manual_seed(0)
    audio, frames = torch.randn(2, c.audio_frames, c.num_mel_bins), torch.randn(2, 3, c.image_size, c.image_size)
    config = cfg.RunConfig(data_root=str(tmp_path))
    folder = engine.cache_folder(tmp_path / "cache", teacher, config, {"image_size": c.image_size})
    first = engine.teacher_outputs(teacher, None, audio, frames, 1.0, ["clip#0", "clip#1"],
                                   engine.TeacherCache(0.0, folder))  # nothing in memory: disk only
    assert sorted(p.name for p in folder.iterdir()) == ["clip_0.safetensors", "clip_1.safetensors"]
    later = engine.TeacherCache(0.0, folder)  # another run
    monitor = EntropyMonitor(c.embed_dim, c.num_classes)
    again = engine.teacher_outputs(teacher, RunMonitor(monitor), audio, frames, 0.5, ["clip#0", "clip#1"], later)
    assert (later.hits, later.misses) == (2, 0)
    for name in ("logits", "audio", "visual", "fused"):
        assert torch.equal(again[name], first[name])
    # EM weights come from the run's own monitor, computed on the cached tokens
    expected = monitor.weights({m: first[m] for m in ("audio", "visual", "fused")}, 0.5)
    for m, w in expected.items():
        torch.testing.assert_close(again[f"w_{m}"], w, rtol=1e-6, atol=1e-6)
    # a damaged file is recomputed; other weights or other data give another folder
    (folder / "clip_1.safetensors").write_bytes(b"broken")
    repaired = engine.TeacherCache(0.0, folder)
    engine.teacher_outputs(teacher, None, audio, frames, 1.0, ["clip#0", "clip#1"], repaired)
    assert (repaired.hits, repaired.misses) == (1, 1)
    other = create_model("bench-teacher", num_classes=c.num_classes, labels=c.labels)
    assert engine.cache_folder(tmp_path / "cache", other, config, {"image_size": c.image_size}) != folder
    moved = cfg.RunConfig(data_root=str(tmp_path / "elsewhere"))
    assert engine.cache_folder(tmp_path / "cache", teacher, moved, {"image_size": c.image_size}) != folder


def test_vggsound_paper_setup_with_an_official_style_checkpoint(small_bench, tmp_path):
    """The paper's recipe (CAV-MAE .pth teacher, VGGSound layout, SpecAugment, mixup, label smoothing)
    at toy size: a checkpoint in CAV-MAE's layout (``module.`` keys, no mask decoder) as the teacher."""
    from training.readers.vggsound import read_vggsound_csv

    labels = sorted({row[2] for row in read_vggsound_csv(small_bench / "vggsound" / "vggsound.csv")})
    torch.manual_seed(0)
    teacher = create_model("bench-teacher", num_classes=len(labels), seg_decoder_dim=0)
    checkpoint = tmp_path / "vgg_toy.pth"
    torch.save({f"module.{k}": v for k, v in teacher.state_dict().items()}, checkpoint)
    run = tmp_path / "run"
    distill.main(["--preset", "vggsound-paper", "--vggsound-csv", str(small_bench / "vggsound" / "vggsound.csv"),
                  "--clip-dir", str(small_bench / "vggsound" / "video"), "--teacher", str(checkpoint),
                  "--student", "bench-student", "--out", str(run), "--batch-size", "4", "--workers", "0",
                  "--stop-after-steps", "2", "--log-every", "1", "--seg-decoder-dim", "0", "--freqm", "24",
                  "--timem", "96"])
    saved = json.loads((run / "config.json").read_text())
    assert saved["mixup"] == 0.5 and saved["label_smoothing"] == 0.1 and saved["dataset"] == "vggsound"
    steps = [r for r in records(run) if r["type"] == "train"]
    assert len(steps) == 2 and "distill" in steps[0] and "kd" in steps[0]


@pytest.mark.parametrize("preset,folder", [("avsbench-s4", "Single-source"), ("avsbench-ms3", "Multi-sources")])
def test_avsbench_setups(small_bench, teacher_dir, tmp_path, preset, folder):
    run = tmp_path / "run"
    result = distill.main(["--preset", preset, "--data-root", str(small_bench / "avsbench" / folder), "--teacher",
                           str(teacher_dir), "--out", str(run), "--epochs", "1", "--batch-size", "2", "--workers", "0",
                           "--probe-epochs", "1"])
    assert json.loads((run / "config.json").read_text())["resolved"]["monitor"] == "segmentation"
    assert "mIoU" in result["student"] and result["student"]["frames"] > 0


def test_probes_train_to_convergence_and_stop_on_held_out_clips():
    """Separable features: the probes converge (held-out accuracy high, entropy low) and stop early;
    features that say nothing: the probes stay unsure (entropy near log K) and stop early too."""
    from emktd.monitor import EntropyMonitor
    from training.run.probes import fit_probes

    torch.manual_seed(0)
    classes, dim, n = 5, 16, 600
    labels = torch.randint(0, classes, (n,))
    centres = torch.randn(classes, dim) * 3
    informative = {m: (centres[labels] + torch.randn(n, dim))[:, None] for m in ("audio", "visual", "fused")}
    target = torch.nn.functional.one_hot(labels, classes).float()
    config = cfg.RunConfig(probe_epochs=200, probe_patience=5, probe_lr=1e-2)
    report = fit_probes(config, EntropyMonitor(dim, classes), informative, target.argmax(1), "cpu")
    assert report["held_out_clips"] == 60 and report["train_clips"] == 540
    assert report["best_epoch"] < len(report["epoch_losses"]) < 200  # stopped on the held-out loss
    for m, r in report["held_out"].items():
        assert r["accuracy"] > 0.9 and r["entropy"] < 0.5, (m, r)
    noise = {m: torch.randn(n, 1, dim) for m in ("audio", "visual", "fused")}
    report = fit_probes(config, EntropyMonitor(dim, classes), noise, labels, "cpu")
    assert len(report["epoch_losses"]) < 200
    for m, r in report["held_out"].items():
        assert r["accuracy"] < 0.4 and r["entropy"] > 0.8 * math.log(classes), (m, r)


def test_transfer_pool_clips_teach_through_the_teacher_only(small_bench, teacher_dir, tmp_path):
    """--transfer-pool N: N unlabelled clips a epoch beside the labelled ones; the class loss reads
    the labelled samples only, the teacher cache never keeps a pool clip, and the record says so."""
    import torch.nn.functional as F

    from training.run import config as cfg
    from training.run.objective import task_losses
    from training.run.teacher import TeacherCache

    config = cfg.RunConfig(label_smoothing=0.1)
    logits = torch.randn(4, 3)
    target = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0], [0, 0, 0]])
    labelled = torch.tensor([True, False, True, False])
    terms = task_losses(config, {"logits": logits}, {"target": target, "labelled": labelled})
    expected = F.cross_entropy(logits[labelled], target[labelled], label_smoothing=0.1)
    torch.testing.assert_close(terms["cls"], expected)
    assert task_losses(config, {"logits": logits}, {"target": target, "labelled": torch.zeros(4, dtype=torch.bool)}
                       )["cls"] == 0
    cache = TeacherCache(1.0)
    cache.put(["a#0", None], {"logits": torch.ones(2, 3)})
    assert list(cache.store) == ["a#0"] and cache.get([None, "a#0"])[0] is None

    run = tmp_path / "pooled"
    distill.main(args(small_bench, teacher_dir, run, "--method", "emktd+kd", "--transfer-pool", "4",
                      "--cache-teacher-gb", "1"))  # one whole epoch: every pool clip is visited
    start = next(r for r in records(run) if r["type"] == "start")
    assert start["pool_clips"] == 4 and start["steps_per_epoch"] == -(-(start["train_clips"] + 4) // 4)
    assert json.loads((run / "metrics.json").read_text())["pool_clips"] == 4
    fails_fast(["--task", "teacher", "--data-root", str(small_bench), "--out", str(tmp_path / "t"),
                "--transfer-pool", "4"], "transfer_pool composes unlabelled clips", tmp_path / "t")


def test_the_contrastive_term_pairs_each_clip_s_sound_with_its_picture(small_bench, tmp_path):
    """--contrastive W: CAV-MAE's InfoNCE between a clip's pooled audio and visual tokens; it needs no
    label, so a teacher can also learn from transfer-pool clips through it."""
    from training.run.objective import contrastive_loss

    torch.manual_seed(0)
    audio = torch.randn(6, 5, 16)
    matched = contrastive_loss(audio, audio.clone())
    shuffled = contrastive_loss(audio, audio[torch.tensor([1, 2, 3, 4, 5, 0])])
    assert matched < 0.1 < shuffled
    # samples that lost a modality sit out; fewer than two taking part give zero
    paired = torch.tensor([True, True, False, False, False, False])
    torch.testing.assert_close(contrastive_loss(audio, audio[torch.tensor([1, 0, 2, 3, 4, 5])], paired),
                               contrastive_loss(audio[:2], audio[torch.tensor([1, 0])]))
    assert contrastive_loss(audio, audio, torch.tensor([True] + [False] * 5)) == 0
    run = tmp_path / "contrast"
    distill.main(["--task", "teacher", "--data-root", str(small_bench), "--out", str(run), "--epochs", "1",
                  "--batch-size", "4", "--log-every", "1", "--workers", "0", "--contrastive", "0.5",
                  "--transfer-pool", "4", "--modality-dropout", "0.3"])
    steps = [r for r in records(run) if r["type"] == "train"]
    assert steps and all(r["contrast"] > 0 for r in steps)
    assert json.loads((run / "metrics.json").read_text())["pool_clips"] == 4
