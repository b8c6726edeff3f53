"""Adding a method or a dataset is one registry entry: shown here with entries a test registers."""

import json

import pytest

from emktd import losses as L
from training.experiments import results
from training.perf import throughput
from training.run import config as cfg
from training.run import datasets, methods
from training.run import pipeline as distill


def _fused_linear_ktd(ctx: methods.Context):
    """A toy method: linear-kernel KTD on the fused tokens only."""
    term = L.ktd_loss(ctx.t["fused"], ctx.s["fused"], "linear", teacher_grid=ctx.teacher_grids["fused"],
                      student_grid=ctx.student_grids["fused"])
    return term, {"fused_linear": term}


@pytest.fixture
def toy_method(monkeypatch):
    entry = methods.Method("fusedlin", "linear KTD on the fused tokens", _fused_linear_ktd, 10.0)
    monkeypatch.setitem(methods.METHODS, entry.name, entry)
    return entry


def common(small_bench, teacher_dir, out):
    return ["--data-root", str(small_bench), "--teacher", str(teacher_dir), "--out", str(out), "--epochs", "1",
            "--batch-size", "4", "--log-every", "1", "--workers", "0", "--stop-after-steps", "1"]


def test_a_registered_method_is_a_flag_a_run_and_a_throughput_row(toy_method, small_bench, teacher_dir, tmp_path,
                                                                   capsys):
    assert {"fusedlin", "fusedlin+kd"} <= set(methods.names())
    with pytest.raises(SystemExit):
        cfg.parser().parse_args(["--help"])
    assert "fusedlin+kd" in capsys.readouterr().out
    run = tmp_path / "run"
    distill.main(common(small_bench, teacher_dir, run) + ["--method", "fusedlin+kd"])
    saved = json.loads((run / "config.json").read_text())
    assert saved["resolved"]["beta"] == 10.0 and saved["resolved"]["kd"]
    step = next(json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"train"' in line)
    assert step["fused_linear"] > 0 and step["distill"] == pytest.approx(10.0 * step["method"])
    throughput.main(["--batch", "1", "--repeats", "1", "--methods", "fusedlin"])
    assert "| distill fusedlin |" in capsys.readouterr().out


def test_an_unregistered_method_is_refused_at_start_up(small_bench, teacher_dir, tmp_path):
    with pytest.raises(SystemExit, match="fusedlin"):
        distill.main(common(small_bench, teacher_dir, tmp_path / "run") + ["--method", "fusedlin"])
    assert not (tmp_path / "run").exists()  # nothing left behind


def _s4_first_clips(config, fbank, image_size) -> datasets.Parts:
    """A toy dataset: the first two clips of an S4 folder, trained and evaluated on."""
    from training.readers.avsbench import S4Dataset

    root = config.path(config.data_root)
    train = S4Dataset(root, "train", None, fbank, image_size)
    train.items = train.items[:2]
    evaluation = S4Dataset(root, "test", train.labels, fbank, image_size)
    evaluation.items = evaluation.items[:2]
    return datasets.Parts(train.labels, [("S4", train)], [("Tiny", evaluation)])


@pytest.fixture
def toy_dataset(monkeypatch):
    entry = datasets.DatasetEntry("s4-tiny", "two clips of an S4 folder", ("segmentation",), _s4_first_clips,
                                  parts=("Tiny",))
    monkeypatch.setitem(datasets.DATASET_ENTRIES, entry.name, entry)
    return entry


def test_a_registered_dataset_is_validated_run_and_tabled(toy_dataset, small_bench, teacher_dir, tmp_path):
    argv = common(small_bench / "avsbench" / "Single-source", teacher_dir, tmp_path / "run")[:-2]
    with pytest.raises(SystemExit, match="s4-tiny supports --objective segmentation"):
        distill.main(argv + ["--dataset", "s4-tiny"])
    result = distill.main(argv + ["--dataset", "s4-tiny", "--objective", "segmentation", "--method", "ktd"])
    assert result["train_clips"] == 2 and result["student"]["clips"] == 2
    assert set(result["student"]["segmentation_by_part"]) == {"Tiny"}
    results.record(tmp_path / "run", "toy", tmp_path / "records")
    header = results.table(tmp_path / "records").splitlines()[0]
    assert "Tiny mIoU" in header and "S4 mIoU" not in header
