import json

import pytest

from training.experiments import results
from training.run import config as cfg


def fake_run(folder, seed, top1, s4_miou, task="distill", method="emktd+kd"):
    folder.mkdir(parents=True)
    config = json.loads(cfg.to_json(cfg.RunConfig(task=task, method=method, seed=seed)))
    (folder / "config.json").write_text(json.dumps(config))
    student = {"clips": 600, "top1": top1, "mAP": 0.5, "segmentation_by_part": {"S4": {"mIoU": s4_miou}}}
    metrics = {"student": student, "student_parameters": 347970, "hardware": "cpu", "train_seconds": 1.0}
    if task == "distill":
        metrics["teacher"] = {"top1": 0.8, "em_weights_by_mode": {"audio": {"audio": 0.9, "visual": 0.1, "fused": 0.5}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_records_and_table(tmp_path):
    out = tmp_path / "results"
    results.record(fake_run(tmp_path / "a", 0, 0.60, 0.40), "emktd-s0", out)
    results.record(fake_run(tmp_path / "b", 1, 0.70, 0.50), "emktd-s1", out)
    results.record(fake_run(tmp_path / "t", 0, 0.80, 0.70, task="teacher"), "teacher", out)
    text = results.table(out)
    lines = text.splitlines()
    assert lines[2].startswith("| teacher (bench-teacher) | from scratch, lr 0.0005, 8 ep | 1 |")  # the preset it built
    # Two seeds of one setting: mean 65.0, sample standard deviation 7.1 (top-1); 45.0 ± 7.1 (S4 mIoU).
    emktd = next(line for line in lines if "emktd+kd" in line)
    assert "| 2 | 347,970 | 65.0 ± 7.1 | 50.0 ± 0.0 | 45.0 ± 7.1 | - |" in emktd
    assert "| classification | only the audio | 0.900 | 0.100 | 0.500 |" in results.monitor_table(out)
    from PIL import Image

    figure = results.monitor_figure(tmp_path / "view.png", out)
    assert Image.open(figure).size[0] > 300


def test_groups_of_clips_are_columns_and_mode_rows(tmp_path):
    out = tmp_path / "results"
    folder = fake_run(tmp_path / "g", 0, 0.60, 0.40)
    metrics = json.loads((folder / "metrics.json").read_text())
    seen = {"top1": 0.9, "mAP": 0.8, "top1_by_mode": {"clean": 1.0, "visual": 0.5},
            "segmentation_by_part": {"S4": {"mIoU": 0.6}}}
    new = {"top1": 0.3, "mAP": 0.2, "top1_by_mode": {"clean": 0.25, "visual": 0.125},
           "segmentation_by_part": {"S4": {"mIoU": 0.1}}}
    metrics["student"].update(by_group={"seen": seen, "new": new}, top1_by_mode={"clean": 0.7})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    results.record(folder, "grouped", out)
    results.record(fake_run(tmp_path / "old", 0, 0.55, 0.35, method="kd"), "before-groups", out)
    header, _, *rows = results.table(out).splitlines()
    cells = dict(zip(header.split(" | "), next(r for r in rows if "emktd" in r).split(" | ")))
    assert (cells["top-1"], cells["S4 mIoU"], cells["new top-1"], cells["new S4 mIoU"]) == ("90.0", "60.0", "30.0", "10.0")
    old = dict(zip(header.split(" | "), next(r for r in rows if "| kd," in r).split(" | ")))
    assert (old["top-1"], old["new top-1"]) == ("55.0", "-")  # a record without groups: seen clips only
    modes = results.modes_table(out)
    assert "| seen | 100.0 | - | 50.0 | - |" in modes and "| new | 25.0 | - | 12.5 | - |" in modes


def test_record_needs_a_finished_run(tmp_path):
    with pytest.raises(SystemExit, match="metrics.json"):
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "config.json").write_text("{}")
        results.record(tmp_path / "r", "x", tmp_path)


def test_val_runs_go_to_the_sweep_table_and_teacher_reevaluation(tmp_path):
    out = tmp_path / "results"
    results.record(fake_run(tmp_path / "a", 0, 0.60, 0.40), "emktd-s0", out)
    val = fake_run(tmp_path / "v", 0, 0.30, 0.20)
    config = json.loads((val / "config.json").read_text())
    config["eval_split"], config["lam"] = "val", 4.0
    (val / "config.json").write_text(json.dumps(config))
    results.record(val, "sweep", out)
    assert "30.0" not in results.table(out) and "60.0" in results.table(out)
    assert "30.0" in results.sweep_table(out) and "λ=4.0" in results.sweep_table(out)
    # a teacher record evaluated again in a distillation run (which evaluates its teacher)
    teacher = fake_run(tmp_path / "t", 0, 0.75, 0.70, task="teacher")  # its own evaluation: 0.75
    path = results.record(teacher, "teacher", out, evaluation_from=tmp_path / "a")
    entry = json.loads(path.read_text())
    assert entry["student"]["top1"] == 0.8 and entry["evaluated_in"] == str(tmp_path / "a")
    # a teacher run that evaluated itself on val, evaluated on test by the distillation run: a test record
    tuned = fake_run(tmp_path / "tv", 0, 0.65, 0.60, task="teacher")
    config = json.loads((tuned / "config.json").read_text())
    (tuned / "config.json").write_text(json.dumps({**config, "eval_split": "val"}))
    entry = json.loads(results.record(tuned, "teacher-val", out, evaluation_from=tmp_path / "a").read_text())
    assert entry["config"]["eval_split"] == "test" and entry["student"]["top1"] == 0.8
    with pytest.raises(SystemExit, match="teacher run"):
        results.record(tmp_path / "a", "x", out, evaluation_from=tmp_path / "a")


def test_teacher_recipe_stages_ablations_and_variants(tmp_path):
    from training.experiments import teacher_recipe as recipe

    pre = recipe.stage_args("pretrain", tmp_path)
    assert pre[pre.index("--train-source") + 1] == "stream" and pre[-2:] == ["--out", str(tmp_path / "pretrain")]
    (tmp_path / "pretrain" / "checkpoints").mkdir(parents=True)
    (tmp_path / "pretrain" / "checkpoints" / "last.pt").write_bytes(b"")
    assert recipe.stage_args("pretrain", tmp_path)[-2:] == ["--resume", "true"]  # an interrupted stage resumes
    fine = recipe.stage_args("finetune", tmp_path)
    for name, (flag, value) in recipe.ABLATIONS.items():
        args = recipe.stage_args(name, tmp_path)
        assert len(args) == len(fine) - (2 if value is None else 0)
        assert (flag in args) == (value is not None) and (value is None or args[args.index(flag) + 1] == value)
        changed = {a for a in args if a not in fine} - {str(tmp_path / name), value}
        assert not changed, (name, changed)  # one option differs, nothing else
    for name, added in recipe.VARIANTS.items():
        args = recipe.stage_args(name, tmp_path)
        assert args[:len(fine) - 2] == fine[:-2] and args[len(fine) - 2:] == [*added, "--out", str(tmp_path / name)]
    scratch = recipe.stage_args("no-pretraining", tmp_path)  # the fine-tuning stage without --init-from
    for name, added in recipe.FROM_SCRATCH.items():
        args = recipe.stage_args(name, tmp_path)
        assert "--init-from" not in args
        assert args == [*scratch[:-2], *added, "--out", str(tmp_path / name)]


def test_differences_from_emktd_with_p_values_paired_by_seed_and_welch(tmp_path):
    out = tmp_path / "results"
    for seed, (em, ktd) in enumerate([(0.5, 0.6), (0.5, 0.7), (0.6, 0.8)]):
        results.record(fake_run(tmp_path / f"em{seed}", seed, em, 0.3), f"em-s{seed}", out)
        results.record(fake_run(tmp_path / f"ktd{seed}", seed, ktd, 0.3, method="ktd+kd"), f"ktd-s{seed}", out)
    results.record(fake_run(tmp_path / "kd0", 0, 0.4, 0.3, method="kd"), "kd-s0", out)
    header, _, *rows = results.significance_table(out).splitlines()
    assert header.startswith("| model | method | seeds | Δ top-1 | Δ mAP |")
    def cells(row):
        return dict(zip(header.strip("| ").split(" | "), row.strip("| ").split(" | ")))

    ktd = cells(next(r for r in rows if "ktd+kd" in r))
    # differences 0.1, 0.2, 0.2: t = 5 on 2 degrees of freedom, two-sided p = 1 - 5 / sqrt(27) = 0.038
    # no *: three paired tests in the table, Holm multiplies the smallest p by 3 (0.115)
    assert ktd["Δ top-1"].startswith("+16.7 (p 0.038, W ")
    welch = float(ktd["Δ top-1"].split("W ")[1].rstrip(")"))
    assert 0.05 < welch < 0.15  # unpaired, the same differences are less certain
    assert ktd["Δ mAP"] == "+0.0 (p 1.000, W 1.000)"
    kd = cells(next(r for r in rows if "| kd," in r))
    assert kd["Δ top-1"] == "-13.3"  # one seed: a difference without a p-value
    # two seeds each exactly 2 clips of 600 apart: a constant difference gives no p-value, not p = 0
    for seed in range(2):
        results.record(fake_run(tmp_path / f"fn{seed}", seed, 0.5 - 2 / 600, 0.3, method="fitnets+kd"), f"fn-s{seed}",
                       out)  # EM-KTD has 0.5 at seeds 0 and 1
    header, _, *rows = results.significance_table(out).splitlines()
    fitnets = cells(next(r for r in rows if "fitnets" in r))["Δ top-1"]
    assert "(W " in fitnets and "p " not in fitnets and "*" not in fitnets
    assert not any("emktd" in r for r in rows)  # the reference is not compared with itself
    assert "| cpu | 7 |" not in results.compute_summary(out)  # fake records carry no wall times


def test_a_row_with_the_same_value_at_every_seed_is_tested_quietly():
    """One side constant across seeds (433 of 600 clips right at both seeds) is a valid test; scipy's
    precision warning about nearly identical data is not the user's concern and is not shown.
    Paired differences 0 and -0.01: t = -1 on 1 degree of freedom, p = 0.5; Welch's t = -1 with
    Welch-Satterthwaite's 1 degree of freedom, p = 0.5."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paired, welch = results._test_p({0: 433 / 600, 1: 433 / 600}, {0: 433 / 600, 1: 439 / 600})
    assert paired == pytest.approx(0.5) and welch == pytest.approx(0.5)


def test_holm_adjusts_a_family_of_p_values_step_down():
    # sorted: 0.01 x 4 = 0.04, 0.03 x 3 = 0.09, 0.04 x 2 = 0.08 -> 0.09 (never below an earlier one), 0.5 x 1
    assert results.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert results.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_a_difference_that_survives_holm_is_starred(tmp_path):
    out = tmp_path / "results"
    for seed, (em, ktd) in enumerate([(0.5, 0.6), (0.5, 0.601), (0.6, 0.7)]):
        results.record(fake_run(tmp_path / f"em{seed}", seed, em, 0.3), f"em-s{seed}", out)
        results.record(fake_run(tmp_path / f"ktd{seed}", seed, ktd, 0.3, method="ktd+kd"), f"ktd-s{seed}", out)
    header, _, *rows = results.significance_table(out).splitlines()
    cells = dict(zip(header.strip("| ").split(" | "), rows[0].strip("| ").split(" | ")))
    p = float(cells["Δ top-1"].split("(p ")[1].split(",")[0].lstrip("<"))
    assert 3 * p < 0.05 and cells["Δ top-1"].startswith("+10.0* (p ")  # consistent across seeds
    assert cells["Δ mAP"] == "+0.0 (p 1.000, W 1.000)"  # no difference, no star


def test_compute_is_summed_per_hardware_in_core_hours(tmp_path):
    for name, hardware, seconds in (("a", "AMD EPYC, 2 threads", 3600), ("b", "AMD EPYC, 2 threads", 1800),
                                    ("c", "AMD EPYC, 1 thread", 7200), ("e", "AMD EPYC, 1 threads", 3600),
                                    ("d", "NVIDIA H100 80GB HBM3", 360)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"name": name, "config": {"method": "none"},
                                                           "student": {"top1": 0.5}, "hardware": hardware,
                                                           "wall_seconds": seconds}))
    lines = results.compute_summary(tmp_path).split("\n")
    assert "| AMD EPYC, 2 threads | 2 | 1.5 | 3.0 |" in lines
    assert "| AMD EPYC, 1 thread | 2 | 3.0 | 3.0 |" in lines  # older records said "1 threads"
    assert "| NVIDIA H100 80GB HBM3 | 1 | 0.1 | - |" in lines


def test_a_record_evaluating_another_records_student_adds_its_evaluation_only(tmp_path):
    def write(name, wall, train, trained_in=None):
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "name": name, "config": {"method": "kd"}, "student": {"top1": 0.5}, "hardware": "AMD EPYC, 1 thread",
            "wall_seconds": wall, "train_seconds": train, **({"trained_in": trained_in} if trained_in else {})}))

    write("tune", 3600, 3500)
    write("cmp-s1", 1800, 1700)
    write("cmp-s0", 3600 + 360, 3500, trained_in="tune")  # the tuning run's training, then 460 s of its own
    lines = results.compute_summary(tmp_path).split("\n")
    assert "| AMD EPYC, 1 thread | 2 | 1.6 | 1.6 |" in lines  # 3600 + 1800 + 460 s
    assert any(line.startswith("Besides these runs, 1 record(s)") for line in lines)


def test_a_run_keeps_each_clips_outcome_and_an_older_record_gets_it_back(small_bench, teacher_dir, tmp_path):
    from training.run import pipeline as distill

    run, out = tmp_path / "run", tmp_path / "results"
    distill.main(["--data-root", str(small_bench), "--teacher", str(teacher_dir), "--epochs", "1", "--batch-size",
                  "4", "--probe-epochs", "2", "--workers", "0", "--method", "emktd+kd", "--eval-teacher", "false",
                  "--out", str(run)])
    results.record(run, "tiny-s0", out)
    entry = json.loads((out / "tiny-s0.json").read_text())
    clips = json.loads((out / "clips" / "tiny-s0.json").read_text())
    assert "per_clip" not in entry["student"]  # the record stays small; the clips go beside it
    student = entry["student"]
    assert len(clips["ids"]) == len(set(clips["ids"])) == student["clips"]
    assert sum(clips["top1"]) / len(clips["top1"]) == pytest.approx(student["top1"])
    assert sum(clips["iou_sum"]) / sum(clips["frames"]) == pytest.approx(student["mIoU"], abs=1e-5)
    for group, metrics in student["by_group"].items():
        hits = [h for h, g in zip(clips["top1"], clips["group"]) if g == group]
        assert len(hits) == metrics["clips"] and sum(hits) / len(hits) == pytest.approx(metrics["top1"])

    # a record written before runs kept their clips: its student is evaluated again
    (out / "clips" / "tiny-s0.json").unlink()
    assert results.backfill_clips(out) == [out / "clips" / "tiny-s0.json"]
    again = json.loads((out / "clips" / "tiny-s0.json").read_text())
    assert again["ids"] == clips["ids"] and again["top1"] == clips["top1"] and again["frames"] == clips["frames"]
    assert results.backfill_clips(out) == []  # nothing left to fill
    (out / "clips" / "tiny-s0.json").unlink()
    entry["student"]["top1"] += 0.01  # not what its folder's student gives: refused, nothing written
    (out / "tiny-s0.json").write_text(json.dumps(entry))
    with pytest.raises(SystemExit, match="tiny-s0: evaluating .* gives top1"):
        results.backfill_clips(out)
    assert not (out / "clips" / "tiny-s0.json").exists()


def _clips(out, name, hits, ious=None):
    n = len(hits)
    results.write_clips(out, name, "test", {"ids": [f"c{i}" for i in range(n)], "group": ["seen"] * n,
                                           "top1": hits, "iou_sum": ious or [0.5] * n, "frames": [1] * n})


def test_clip_intervals_resample_clips_and_seeds(tmp_path):
    out = tmp_path / "results"
    ref_hits = [0, 1] * 100  # 50 %
    # seed by seed the row is right on 60 more clips out of 200 than the reference: +30 points
    for seed in range(3):
        results.record(fake_run(tmp_path / f"em{seed}", seed, 0.5, 0.3), f"em-s{seed}", out)
        results.record(fake_run(tmp_path / f"ktd{seed}", seed, 0.8, 0.3, method="ktd+kd"), f"ktd-s{seed}", out)
        _clips(out, f"em-s{seed}", ref_hits)
        _clips(out, f"ktd-s{seed}", [1] * 60 + ref_hits[60:])
    point, low, high = results.clip_interval(*(results._clip_outcomes(out, [json.loads(
        (out / f"{m}-s{s}.json").read_text()) for s in range(3)]) for m in ("ktd", "em")), "seen", "top1")
    # 30 of the 200 clips differ: the share p = 0.15 of clips that gain, sd of the mean difference
    # sqrt(p (1 - p) / 200) = 2.5 points; 95 % of draws within about 2 sd of +15
    assert point == pytest.approx(15.0) and 9 < low < 12 and 18 < high < 21
    header, _, row = results.clip_table(out).splitlines()
    assert "Δ top-1 [95 %]" in header and "| ktd+kd" in row and "+15.0 [" in row
    # where the seeds disagree the interval widens: seed 2 now loses what seeds 0 and 1 gain
    _clips(out, "ktd-s2", [0] * 60 + ref_hits[60:])
    point, low, high = results.clip_interval(*(results._clip_outcomes(out, [json.loads(
        (out / f"{m}-s{s}.json").read_text()) for s in range(3)]) for m in ("ktd", "em")), "seen", "top1")
    assert point == pytest.approx(5.0) and low < -10 and high > 12


def test_clip_intervals_need_clips_on_both_sides(tmp_path):
    out = tmp_path / "results"
    results.record(fake_run(tmp_path / "em0", 0, 0.5, 0.3), "em-s0", out)
    results.record(fake_run(tmp_path / "ktd0", 0, 0.8, 0.3, method="ktd+kd"), "ktd-s0", out)
    _clips(out, "ktd-s0", [1, 0, 1])
    assert results.clip_table(out).startswith("no records on test keep per-clip outcomes")
    _clips(out, "em-s0", [1, 0, 0], ious=[0.5, 0.5, 0.2])
    header, _, row = results.clip_table(out).splitlines()
    assert "+33.3 [" in row and "| +10.0 [" in row  # mIoU over the frames: (1.5 - 1.2) / 3


def test_records_keep_the_probes_report_and_the_probes_table_shows_out_of_fold(tmp_path):
    out = tmp_path / "results"
    report = {"best_epoch": 3, "train_clips": 8, "held_out_clips": 2,
              "train": {m: {"accuracy": 0.9, "entropy": 1.0} for m in ("audio", "visual", "fused")},
              "held_out": {m: {"accuracy": 0.7, "entropy": 1.2} for m in ("audio", "visual", "fused")},
              "mean_weights": {"audio": 0.4, "visual": 0.05, "fused": 0.3}}
    plain = fake_run(tmp_path / "em0", 0, 0.5, 0.3)
    folded = fake_run(tmp_path / "cf0", 0, 0.5, 0.3)
    config = json.loads((folded / "config.json").read_text())
    (folded / "config.json").write_text(json.dumps({**config, "monitor_folds": 5}))
    for run, extra in ((plain, {}), (folded, {"folds": 5, "out_of_fold": {
            m: {"accuracy": 0.6, "entropy": 1.5} for m in ("audio", "visual", "fused")}})):
        # the log's record, per-epoch losses and all: the record keeps the report without them
        line = {"type": "probes", "epoch_losses": [3.0, 2.0], **report, **extra}
        (run / "log.jsonl").write_text(json.dumps({"type": "start"}) + "\n" + json.dumps(line) + "\n")
    results.record(plain, "em-s0", out)
    results.record(folded, "cf-s0", out)
    kept = json.loads((out / "cf-s0.json").read_text())["probes"]
    assert kept["out_of_fold"]["audio"] == {"accuracy": 0.6, "entropy": 1.5} and "epoch_losses" not in kept
    assert kept["mean_weights"] == report["mean_weights"]
    header, _, *rows = results.probes_table(out).splitlines()
    cols = header.strip("| ").split(" | ")
    rows = [dict(zip(cols, r.strip("| ").split(" | "))) for r in rows]
    audio = [r for r in rows if r["probe on the teacher's"] == "audio"]
    folded_audio = next(r for r in audio if r["monitor"].endswith("cross-fitted"))
    assert (folded_audio["accuracy, training clips it fitted"], folded_audio["accuracy, held-out training clips"],
            folded_audio["accuracy, out of fold"], folded_audio["entropy, out of fold"]) == ("90.0", "70.0", "60.0",
                                                                                              "1.50")
    plain_audio = next(r for r in audio if r["monitor"] == "classification")
    assert plain_audio["accuracy, out of fold"] == "-" and plain_audio["entropy, held-out training clips"] == "1.20"


def test_standing_says_ahead_behind_or_level_and_how_sure(tmp_path):
    out = tmp_path / "results"
    ref_hits = [0, 1] * 100  # EM-KTD: right on the odd clips, 50 %
    # per seed, how many clips each row gets right that EM-KTD gets wrong (+) or the other way (-)
    plan = {"ktd+kd": (60, 62, 58), "kd": (2, -2, 0), "fitnets+kd": (20, 10, 40)}
    for seed in range(3):
        results.record(fake_run(tmp_path / f"em{seed}", seed, 0.5, 0.3), f"em-s{seed}", out)
        _clips(out, f"em-s{seed}", ref_hits)
        for method, flips in plan.items():
            name, f = f"{method}-s{seed}", flips[seed]
            results.record(fake_run(tmp_path / name, seed, 0.5 + f / 200, 0.3, method=method), name, out)
            hits = list(ref_hits)
            for i in range(abs(f)):
                hits[2 * i + (f < 0)] = int(f > 0)
            _clips(out, name, hits)
    results.record(fake_run(tmp_path / "at0", 0, 0.9, 0.3, method="at+kd"), "at-s0", out)  # no clips file
    header, _, *rows = results.standing_table(out).splitlines()
    assert header.startswith("| model | method | seeds | EM-KTD on top-1 |")
    top1 = {r.strip("| ").split(" | ")[1].split(" ")[0].rstrip(","): r.strip("| ").split(" | ")[3] for r in rows}
    assert top1 == {"ktd+kd": "behind, sure",  # +30, +31, +29 points
                    "kd": "level",  # +1, -1, 0 points: within the clips' noise
                    "fitnets+kd": "behind, likely",  # +10, +5, +20: clear on the clips, too uneven for 2 df
                    "at+kd": "untested"}  # +40 points, but one seed and no clips to go by


def _record_file(out, name, task, student, parameters, transfer_pool=0):
    out.mkdir(parents=True, exist_ok=True)
    entry = {"name": name, "config": {"task": task, "eval_split": "test", "transfer_pool": transfer_pool,
                                      "dataset": "embedded", "seed": 0},
             "student": student, "student_parameters": parameters}
    (out / f"{name}.json").write_text(json.dumps(entry))


def _figures(seen, new, picture, s4):
    return {"by_group": {"seen": {"top1": seen, "top1_by_mode": {"visual": picture},
                                  "segmentation_by_part": {"S4": {"mIoU": s4}, "MS3": {"mIoU": s4}}},
                         "new": {"top1": new, "top1_by_mode": {"visual": picture},
                                 "segmentation_by_part": {"S4": {"mIoU": s4}}}}}


def test_the_targets_table_reads_the_pair_and_says_what_is_met(tmp_path):
    out = tmp_path / "results"
    _record_file(out, "teacher-s0", "teacher", _figures(0.95, 0.40, 0.90, 0.70), 1000)
    _record_file(out, "protocol-pool-s0", "distill", _figures(0.93, 0.38, 0.5, 0.60), 50, transfer_pool=2400)
    _record_file(out, "protocol-paper-s0", "distill", _figures(0.80, 0.20, 0.5, 0.70), 70)
    _record_file(out, "other-s0", "distill", _figures(0.1, 0.1, 0.1, 0.1), 50)  # not a protocol's record: not read
    teacher, students = results.targets_table(out).split("\n\n")
    rows = {line.split(" | ")[0].strip("| "): line for line in teacher.splitlines()[2:]}
    assert rows["seen top-1"] == "| seen top-1 | 92 | 95.0 | yes |"
    assert rows["new top-1"] == "| new top-1 | 45 | 40.0 | **no** |"
    assert rows["S4 mIoU"].endswith("| 70.0 | yes |")
    header, _, *lines = students.splitlines()
    assert header == "| student, as a fraction of the teacher | least | pool protocol | met | paper protocol | met |"
    rows = {line.split(" | ")[0].strip("| "): line for line in lines}
    # 0.38 / 0.40 = 95 % (met, at least 90 %); 0.20 / 0.40 = 50 %
    assert rows["new top-1"] == "| new top-1 | 90 % | 95 % | yes | 50 % | **no** |"
    assert rows["seen top-1"] == "| seen top-1 | 95 % | 98 % | yes | 84 % | **no** |"
    assert rows["parameters (at most)"] == "| parameters (at most) | 6 % | 5.0 % | yes | 7.0 % | **no** |"
    assert results.targets_table(tmp_path / "none") == "no teacher record on test"


def test_the_teacher_recipe_is_what_val_chose():
    """The recipe is the best candidate by the rule fixed in teacher_recipe (the targets' mean
    fraction, capped at 1), on the committed val records of the current build."""
    from training.experiments import teacher_recipe as recipe

    chosen = recipe.choose()
    assert chosen and chosen[0][0] == recipe.RECIPE
    assert [row[1] for row in chosen] == sorted((row[1] for row in chosen), reverse=True)
    score, figures = recipe.target_score(_figures(0.92, 0.0, 0.85, 0.60))
    # new top-1 at 0 of its 45; the six others at or over their targets count 1 each (capped)
    assert figures[0] == 0.92 and score == pytest.approx(6 / 7)
