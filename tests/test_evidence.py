import json
import os
import stat
import sys
import time

import pytest

from training.experiments import evidence


def write(results_dir, name, top1, miou):
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps({"student": {"top1": top1, "mIoU": miou}}))


def test_every_method_gets_the_same_number_of_trials_over_its_own_knobs():
    for method in evidence.METHODS_COMPARED:
        found = evidence.trials(method)
        assert len(found) == evidence.TRIALS and len({tuple(t.items()) for t in found}) == evidence.TRIALS
        assert found == evidence.trials(method)  # seeded by the method's name: the plan is stable
        assert all(set(t) == set(evidence.knobs(method)) for t in found)
        low, high = evidence.SPACE["lr"]
        assert all(low * 0.95 <= t["lr"] <= high * 1.05 for t in found[1:])
    assert evidence.knobs("none") == evidence.knobs("kd") == ("lr",)
    assert evidence.knobs("ktd+kd") == ("lr", "beta", "gamma")
    assert evidence.knobs("emktd+kd") == ("lr", "beta", "lam", "gamma")
    assert evidence.trials("emktd+kd")[0] == {"lr": 2e-3, "beta": 666.0, "lam": 1.0, "gamma": 0.5}
    plan = evidence.tuning_plan(20)
    # none's defaults are the schedule run at that length, not run again
    assert len(plan) == evidence.TRIALS * len(evidence.METHODS_COMPARED) - 1
    assert "tune-none-t0-val" not in dict(plan) and evidence.trial_name("none", 0, 20) == "sched-none-e20-val"
    assert all(flags[flags.index("--eval-split") + 1] == "val" and flags[flags.index("--epochs") + 1] == "20"
               for _, flags in plan)


def test_the_schedule_is_where_val_miou_levels_off(tmp_path):
    names = [name for name, _ in evidence.schedule_plan()]
    assert names[-1] == f"sched-none-e{evidence.SCHEDULE_CHECK}-val" and len(names) == len(evidence.SCHEDULES) + 1
    assert evidence.chosen_schedule(tmp_path) is None
    write(tmp_path, names[0], 0.5, 0.05)
    write(tmp_path, names[1], 0.5, 0.15)
    assert evidence.chosen_schedule(tmp_path) is None  # 10 -> 20 still climbs; 40 not known yet
    write(tmp_path, names[2], 0.5, 0.155)
    assert evidence.chosen_schedule(tmp_path) == evidence.SCHEDULES[1]  # 20 -> 40 adds half a point
    write(tmp_path, names[2], 0.5, 0.30)
    # still climbing at 40: the longest affordable length, before the check at 80 is run
    assert evidence.chosen_schedule(tmp_path) == evidence.SCHEDULES[2]


def test_settings_are_chosen_on_val_and_the_controls_take_emktds(tmp_path):
    for name, _ in evidence.schedule_plan():
        write(tmp_path, name, 0.5, 0.2)
    epochs = evidence.chosen_schedule(tmp_path)
    assert epochs == evidence.SCHEDULES[0]
    assert [stage for stage, _ in evidence.plans(tmp_path)] == ["schedule", "tuning"]
    for method in evidence.METHODS_COMPARED:
        for k in range(evidence.TRIALS):
            if (method, k) != ("emktd+kd", 3) and (method, k) != ("none", 0):  # none's t0: the schedule run
                write(tmp_path, evidence.trial_name(method, k, epochs), 0.40 + 0.01 * (k == 2), 0.1)
    assert evidence.chosen_settings(tmp_path, epochs)["emktd+kd"] is None  # one of its trials is missing
    # the methods whose trials are in go on to the comparison; EM-KTD and the controls at its setting wait
    stages = dict(evidence.plans(tmp_path))
    assert list(stages) == ["schedule", "tuning", "comparison"]
    waiting = {name for name, _ in stages["comparison"]}
    assert len(waiting) == len(evidence.SEEDS) * (len(evidence.METHODS_COMPARED) - 1)
    assert "cmp-kd-s2" in waiting and not any(name.startswith("cmp-emktd") for name in waiting)
    # the grids mark a method's choice once its own trials are in, not before
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in
            evidence.grid_table(tmp_path).splitlines() if line.startswith("| ")}
    marked = {key for key, line in rows.items() if line.endswith("| yes |")}
    assert ("kd", "2") in marked and ("none", "0") in marked and not any(m == "emktd+kd" for m, _ in marked)
    assert len(marked) == len(evidence.METHODS_COMPARED) - 1
    write(tmp_path, "tune-emktd+kd-t3-val", 0.40, 0.2)  # the best of EM-KTD's trials on top-1 + mIoU
    chosen = evidence.chosen_settings(tmp_path, epochs)
    assert chosen["none"] == evidence.trials("none")[0]  # its schedule run scored best
    assert chosen["kd"] == evidence.trials("kd")[2] and chosen["emktd+kd"] == evidence.trials("emktd+kd")[3]
    plan = dict(evidence.plans(tmp_path)[-1][1])
    assert len(plan) == len(evidence.SEEDS) * (len(evidence.METHODS_COMPARED) + len(evidence.CONTROLS))
    em = chosen["emktd+kd"]
    for name, flags in plan.items():
        assert "--eval-split" not in flags and flags[flags.index("--epochs") + 1] == str(epochs)  # on test
        value = lambda flag: float(flags[flags.index(flag) + 1])  # noqa: E731
        if name.startswith(("cmp-emktd-static", "cmp-ktd+kd-at-emktd-beta", "cmp-emktd+kd-crossfit",
                            "cmp-emktd+kd-segmonitor")):
            assert value("--lr") == em["lr"] and value("--beta") == em["beta"] and value("--gamma") == em["gamma"]
        elif name.startswith("cmp-kd-"):
            assert value("--lr") == chosen["kd"]["lr"] and "--beta" not in flags
    ktd = plan["cmp-ktd+kd-at-emktd-beta-s1"]
    assert ktd[ktd.index("--method") + 1] == "ktd+kd" and "--lam" not in ktd
    assert "--monitor-folds" in plan["cmp-emktd+kd-crossfit5-s2"]


FAKE_RUN = """#!{python}
import json, os, sys, time
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
if "fail" in out.name:
    sys.exit(3)
if "slow" in out.name:
    (out / "pid").write_text(str(os.getpid()))
    time.sleep(60)
time.sleep(0.3)
out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(json.dumps({{"task": "distill", "threads": os.environ["OMP_NUM_THREADS"]}}))
(out / "metrics.json").write_text(json.dumps({{"student": {{"top1": 0.5, "mIoU": 0.2}}}}))
print("ran", out.name)
"""


def test_runs_go_n_at_a_time_are_recorded_and_a_failure_stops_new_ones(tmp_path, monkeypatch):
    python = tmp_path / "python"
    python.write_text(FAKE_RUN.format(python=sys.executable))
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(evidence.os, "cpu_count", lambda: 2)
    runs, records = tmp_path / "runs", tmp_path / "results"
    plan = [(f"run-{i}", ["--epochs", "1"]) for i in range(3)]
    asked = []

    def todo(excluded):
        asked.append(set(excluded))
        return [item for item in plan if item[0] not in excluded and not (records / f"{item[0]}.json").is_file()]

    evidence.run_all(todo, runs, records, 2, str(python))
    assert sorted(p.name for p in records.iterdir()) == ["run-0.json", "run-1.json", "run-2.json"]
    assert json.loads((runs / "run-0" / "config.json").read_text())["threads"] == "1"  # a core each
    assert "ran run-2" in (runs / "run-2" / "console.txt").read_text()
    assert any({"run-0", "run-1"} <= e for e in asked)  # two were running at once

    plan[:] = [("fail-0", []), ("run-3", []), ("run-4", [])]
    with pytest.raises(SystemExit, match="failed: fail-0"):
        evidence.run_all(todo, runs, records, 1, str(python))
    assert not (records / "run-3.json").exists()  # nothing new starts after a failure

    plan[:] = [("slow-0", [])]  # interrupted: the runs in flight stop with it

    pause = time.sleep

    def interrupted(seconds):
        while not (runs / "slow-0" / "pid").is_file():
            pause(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(evidence.time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evidence.run_all(todo, runs, records, 1, str(python))
    with pytest.raises(ProcessLookupError):
        os.kill(int((runs / "slow-0" / "pid").read_text()), 0)


def test_a_run_that_only_evaluates_elsewhere_takes_over_the_finished_training(small_bench, teacher_dir, tmp_path):
    from training.run import pipeline as distill

    common = ["--data-root", str(small_bench), "--teacher", str(teacher_dir), "--epochs", "1", "--batch-size", "4",
              "--probe-epochs", "2", "--workers", "0", "--method", "emktd+kd", "--lr", "0.001"]
    runs, records = tmp_path / "runs", tmp_path / "results"
    trial = runs / "tune-x-val"
    distill.main([*common, "--eval-split", "val", "--eval-teacher", "false", "--out", str(trial)])
    flags = [*common, "--eval-teacher", "true"]  # on test, the teacher evaluated too
    assert evidence.same_training("cmp-x-s0", flags, runs) == trial
    assert evidence.same_training("cmp-x-s0", [*flags, "--seed", "1"], runs) is None  # another student
    assert evidence.same_training("cmp-x-s0", [*flags[:-4], "--lr", "0.002", *flags[-2:]], runs) is None

    run = runs / "cmp-x-s0"
    # a copy cut short before its config was written is copied again, not trained from its flags
    evidence.adopt(trial, run, flags)
    (run / "config.json").unlink()
    evidence.run_all(lambda excluded: [] if "cmp-x-s0" in excluded else [("cmp-x-s0", flags)], runs, records, 1,
                     sys.executable)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    taken = [i for i, r in enumerate(log) if r["type"] == "trained_in"]
    assert len(taken) == 1 and log[taken[0]]["run"] == "tune-x-val"
    assert not any(r["type"] in ("train", "probes") for r in log[taken[0]:])  # no step, no probe trained again
    assert (run / "final_student_sha256.txt").read_text() == (trial / "final_student_sha256.txt").read_text()
    mine, theirs = (json.loads((folder / "metrics.json").read_text()) for folder in (run, trial))
    assert mine["student"]["clips"] == 10 and theirs["student"]["clips"] != 10  # the test split, not val
    assert "teacher" in mine and "teacher" not in theirs
    assert mine["train_seconds"] >= theirs["train_seconds"]  # the training it took over
    entry = json.loads((records / "cmp-x-s0.json").read_text())
    assert entry["trained_in"] == "tune-x-val" and entry["config"]["eval_split"] == "test"
    assert entry["probes"] == theirs["probes"]  # the monitor it was trained with
    # a run that took its training over is no one's source: the trial it came from is
    assert evidence.same_training("cmp-x-s9", flags, runs) == trial
