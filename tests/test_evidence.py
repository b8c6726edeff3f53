import json

from training.experiments import evidence


def write(results_dir, name, top1, miou):
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps({"student": {"top1": top1, "mIoU": miou}}))


def test_settings_are_selected_on_val_records_only(tmp_path):
    assert evidence.selected_lr(tmp_path) is None  # nothing recorded yet
    write(tmp_path, "sweep-lam1-val", 0.20, 0.00)
    assert evidence.selected_lr(tmp_path) is None  # the other rate is missing
    write(tmp_path, "sweep-lr0.002-lam1-val", 0.30, 0.05)
    assert evidence.selected_lr(tmp_path) == 2e-3
    write(tmp_path, "sweep-lr0.002-lam0.25-val", 0.31, 0.05)
    assert evidence.selected_lambda(tmp_path, 2e-3) is None
    write(tmp_path, "sweep-lr0.002-lam4-val", 0.30, 0.05)  # a tie with lambda 1 ...
    assert evidence.selected_lambda(tmp_path, 2e-3) == 0.25
    write(tmp_path, "sweep-lr0.002-lam0.25-val", 0.30, 0.05)  # ... and a three-way tie goes to the default
    assert evidence.selected_lambda(tmp_path, 2e-3) == 1.0


def test_plan_uses_the_selected_settings_and_names_each_run_once():
    plan = evidence.main_plan(6, 0.25, 2e-3)
    names = [name for name, _ in plan]
    assert len(names) == len(set(names))
    for name, flags in plan:
        assert flags[flags.index("--lr") + 1] == "0.002"
        if "emktd" in name:
            assert flags[flags.index("--lam") + 1] == "0.25"
        assert "--eval-split" not in flags  # the comparison is on test
    for seed in (0, 1, 2):
        assert {f"none-s{seed}", f"kd-s{seed}", f"ktd+kd-rbf-s{seed}", f"emktd+kd-s{seed}"} <= set(names)
    assert all(flags[flags.index("--eval-split") + 1] == "val" for _, flags in evidence.lambda_plan(6, 2e-3))
