import json

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
    assert len(plan) == evidence.TRIALS * len(evidence.METHODS_COMPARED)
    assert all(flags[flags.index("--eval-split") + 1] == "val" and flags[flags.index("--epochs") + 1] == "20"
               for _, flags in plan)


def test_the_schedule_is_where_val_miou_levels_off(tmp_path):
    names = [name for name, _ in evidence.schedule_plan()]
    assert evidence.chosen_schedule(tmp_path) is None
    for name, miou in zip(names, (0.05, 0.15, 0.155)):
        write(tmp_path, name, 0.5, miou)
    assert evidence.chosen_schedule(tmp_path) == evidence.SCHEDULES[1]  # 20 -> 40 adds half a point
    write(tmp_path, names[2], 0.5, 0.30)
    assert evidence.chosen_schedule(tmp_path) == evidence.SCHEDULES[2]  # still climbing: the longest


def test_settings_are_chosen_on_val_and_the_controls_take_emktds(tmp_path):
    for name, _ in evidence.schedule_plan():
        write(tmp_path, name, 0.5, 0.2)
    epochs = evidence.chosen_schedule(tmp_path)
    assert [stage for stage, _ in evidence.plans(tmp_path)] == ["schedule", "tuning"]
    for method in evidence.METHODS_COMPARED:
        for k in range(evidence.TRIALS):
            if (method, k) != ("emktd+kd", 3):
                write(tmp_path, f"tune-{method}-t{k}-val", 0.40 + 0.01 * (k == 2), 0.1)
    assert evidence.chosen_settings(tmp_path) is None  # one trial is missing
    write(tmp_path, "tune-emktd+kd-t3-val", 0.40, 0.2)  # the best of EM-KTD's trials on top-1 + mIoU
    chosen = evidence.chosen_settings(tmp_path)
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
