"""The run configuration: every field through flags and a config file, typed and checked at start-up."""

import json
from dataclasses import fields

import pytest

from training.run import config as cfg

# A value of the right type for every field, unlike its default, and valid in one config.
SAMPLE = {str: "x", int: 3, float: 0.25, bool: True}
SPECIAL = {"task": "teacher", "dataset": "embedded", "objective": "classification", "eval_split": "val",
           "method": "ktd+kd", "kernel": "poly", "monitor": "segmentation", "seed": 7, "workers": 0,
           "student_image_size": 64, "device": "cpu", "out": "runs/x", "mixup": 0.0,
           "fill_teacher_cache": False, "resume": False, "train_source": "stream"}


def sample(name):
    if name in SPECIAL:
        return SPECIAL[name]
    kind, _ = cfg.TYPES[name]
    value = SAMPLE[kind]
    default = getattr(cfg.RunConfig(), name)
    return (not value) if kind is bool and value == default else value


def flag(name, value):
    return [f"--{name.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]


def test_every_field_through_flags_and_a_config_file(tmp_path):
    values = {f.name: sample(f.name) for f in fields(cfg.RunConfig)}
    argv = [part for name, value in values.items() for part in flag(name, value)]
    from_flags = cfg.from_args(argv)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    from_file = cfg.from_args(["--config", str(path)])
    for name, value in values.items():
        assert getattr(from_flags, name) == value, name
        assert getattr(from_file, name) == value, name
        assert type(getattr(from_flags, name)) is cfg.TYPES[name][0], name
    # flags win over the file, the file over the preset
    assert cfg.from_args(["--config", str(path), "--lr", "0.5"]).lr == 0.5
    assert cfg.from_args(["--preset", "vggsound-paper", "--config", str(path)]).mixup == 0.0


@pytest.mark.parametrize("content,field,expected", [
    ({"lr": "fast"}, "lr", "expected a number"),
    ({"epochs": 2.5}, "epochs", "expected a whole number"),
    ({"epochs": True}, "epochs", "expected a whole number"),
    ({"bf16": "yes"}, "bf16", "expected true or false"),
    ({"student_image_size": -64}, "student_image_size", "at least 16"),
    ({"batch_size": 0}, "batch_size", "at least 1"),
    ({"kernel": "cubic"}, "kernel", "not one of linear, poly, rbf"),
    ({"dataset": "imagenet"}, "dataset", "not one of embedded"),
    ({"teacher": None}, "teacher", "got null"),
])
def test_a_wrong_value_in_a_config_file_names_the_field(tmp_path, content, field, expected):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SystemExit) as caught:
        cfg.from_args(["--config", str(path)])
    message = str(caught.value)
    assert str(path) in message and f"{field}:" in message and expected in message


@pytest.mark.parametrize("payload,expected", [
    (b"[1, 2]", "expected a JSON object"),
    (b"\xff\xfe{", "not UTF-8"),
    (b"{'lr': 1}", "not valid JSON"),
    (b'{"learning_rate": 1}', "unknown config key"),
])
def test_a_config_file_that_is_not_an_object_of_fields_is_refused(tmp_path, payload, expected):
    path = tmp_path / "bad.json"
    path.write_bytes(payload)
    with pytest.raises(SystemExit, match=expected):
        cfg.from_args(["--config", str(path)])
    with pytest.raises(SystemExit, match="cannot read"):
        cfg.from_args(["--config", str(tmp_path / "missing.json")])


@pytest.mark.parametrize("argv,expected", [
    (["--lr", "fast"], "--lr: expected a number, got 'fast'"),
    (["--image-size"], "unrecognized arguments"),
    (["--student-image-size", "-1"], "--student-image-size: expected at least 16"),
    (["--bf16", "maybe"], "--bf16: expected true or false"),
    (["--kernel", "cubic"], "--kernel: 'cubic' is not one of"),
])
def test_a_wrong_flag_stops_with_the_flag_named(capsys, argv, expected):
    with pytest.raises(SystemExit):
        cfg.from_args(argv)
    assert expected in capsys.readouterr().err


def test_optional_fields_default_to_none_and_resolve_from_other_fields():
    config = cfg.RunConfig()
    assert config.beta is None and config.resolved_beta() == 666.0
    assert cfg.RunConfig(method="ktd+kd").resolved_beta() == 333.0
    assert cfg.RunConfig(method="kd", beta=2.0).resolved_beta() == 2.0
    assert config.monitor is None and config.resolved_monitor() == "classification"
    assert cfg.RunConfig(objective="segmentation").resolved_monitor() == "segmentation"
    assert cfg.from_args(["--beta", "none"]).beta is None


def test_combinations_are_checked_against_the_registries():
    for argv, expected in ((["--dataset", "vggsound"], "vggsound needs --vggsound-csv"),
                           (["--dataset", "avsbench-s4"], "supports --objective segmentation"),
                           (["--mixup", "0.5"], "mixup mixes class targets"),
                           (["--method", "kd+kd"], "expected one of"),
                           (["--fill-teacher-cache", "true"], "needs teacher_cache_dir")):
        with pytest.raises(SystemExit, match=expected):
            cfg.from_args(argv)


def test_help_documents_every_field_once(capsys):
    with pytest.raises(SystemExit):
        cfg.parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    squeezed = "".join(text.split())  # argparse wraps lines, also at hyphens
    for f in fields(cfg.RunConfig):
        assert text.count(f"--{f.name.replace('_', '-')} ") >= 1, f.name
        assert "".join(f.metadata["help"].split()) in squeezed, f.name
    assert text.count("(default 'emktd+kd')") == 1 and "emktd+kd)" not in text.replace("(default 'emktd+kd')", "")


def test_older_run_folders_resume_with_their_sentinels(tmp_path):
    saved = json.loads(cfg.to_json(cfg.RunConfig()))
    saved.update(beta=-1.0, seg_decoder_dim=-1, student_image_size=0, monitor="", out="", max_train_clips=0)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = cfg.load(tmp_path / "config.json")
    assert (loaded.beta, loaded.seg_decoder_dim, loaded.student_image_size, loaded.monitor, loaded.out,
            loaded.max_train_clips) == (None,) * 6


def test_relative_paths_resolve_one_way_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = cfg.RunConfig()
    # the defaults name places under the repository, wherever the command runs
    assert config.path(config.data_root) == cfg.REPO / "data" / "emktd-bench"
    assert config.path(config.teacher) == cfg.REPO / "weights" / "teacher"
    # a relative path that exists here is the user's own
    (tmp_path / "my-data").mkdir()
    assert config.path("my-data") == tmp_path / "my-data"
    assert config.path(str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"


def test_a_missing_benchmark_is_named_where_it_was_looked_for(tmp_path, monkeypatch):
    from training.run import pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cfg, "REPO", tmp_path / "repo")
    (tmp_path / "repo").mkdir()
    with pytest.raises(SystemExit, match=str(tmp_path / "repo" / "data" / "emktd-bench")):
        pipeline.main(["--task", "teacher", "--build-benchmark", "false", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_imagenet_prior_maps_the_labels_and_names_one_it_lacks(tmp_path):
    from training.embedded.imagenet import imagenet_indices
    from training.run import pipeline

    assert pipeline.imagenet_prior(cfg.RunConfig(), ["dog", "crow"]) == {}
    on = cfg.RunConfig(imagenet_prior=True)
    prior = pipeline.imagenet_prior(on, ["electric_guitar", "crow"])["imagenet_prior"]
    assert prior == (imagenet_indices("electric guitar"), ())  # labels spell spaces as underscores
    with pytest.raises(SystemExit, match="--imagenet-prior: 'unicorn' is not a class of the embedded benchmark's "
                                         "ImageNet map; add it to training/embedded/imagenet.py"):
        pipeline.imagenet_prior(on, ["dog", "unicorn"])


def test_a_run_names_the_benchmark_build_it_read(tmp_path):
    from training.run import pipeline

    config = cfg.RunConfig(data_root=str(tmp_path))
    assert pipeline.benchmark_build(config) is None  # no benchmark.json there
    (tmp_path / "benchmark.json").write_text(json.dumps({"pack_recipe": "abc", "pack_sha256": "f00", "seed": 0,
                                                         "clips": {}}))
    assert pipeline.benchmark_build(config) == {"pack_recipe": "abc", "pack_sha256": "f00", "seed": 0}
    assert pipeline.benchmark_build(cfg.RunConfig(data_root=str(tmp_path), dataset="vggsound")) is None


def test_the_two_protocols_differ_in_the_transfer_pool_only(tmp_path):
    from dataclasses import asdict

    from training.experiments import protocols

    paper, pool = (asdict(cfg.from_args(protocols.run_args(name, tmp_path))) for name in ("paper", "pool"))
    differ = {k for k in paper if paper[k] != pool[k]}
    assert differ == {"transfer_pool", "out"} and paper["transfer_pool"] == 0 < pool["transfer_pool"]
    assert paper["eval_split"] == "val" and paper["teacher"] == "weights/teacher"
    on_test = asdict(cfg.from_args(protocols.run_args("pool", tmp_path, "test")))
    assert {k for k in pool if pool[k] != on_test[k]} == {"eval_split"} and on_test["eval_split"] == "test"
