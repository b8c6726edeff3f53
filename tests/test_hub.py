import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from emktd.hub import ModelLoadError, load_pretrained, save_pretrained
from emktd.models import create_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("bench-student", num_classes=3, labels=("dog", "cow", "violin")).eval()


def inputs(model):
    c = model.config
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(2, c.audio_frames, c.num_mel_bins, generator=generator),
            torch.randn(2, 3, c.image_size, c.image_size, generator=generator))


def test_round_trip_predicts_the_same(tmp_path, model):
    folder = save_pretrained(model, tmp_path / "student", card="# student\n")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_pretrained(folder)
    assert loaded.config == model.config and loaded.config.labels == ("dog", "cow", "violin")
    assert not loaded.training
    with torch.no_grad():
        a, b = model(*inputs(model)), loaded(*inputs(model))
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    torch.testing.assert_close(a.mask_logits, b.mask_logits, rtol=0, atol=0)


def test_half_precision_storage(tmp_path, model):
    folder = save_pretrained(model, tmp_path / "half", dtype=torch.float16)
    assert all(t.dtype == torch.float16 for t in load_file(folder / "model.safetensors").values())
    loaded = load_pretrained(folder)
    assert next(loaded.parameters()).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs(model)).logits, model(*inputs(model)).logits, atol=2e-2, rtol=0)


@pytest.mark.parametrize("change,message", [
    ("extra", "unexpected"), ("drop", "missing"), ("shape", "shape mismatch"),
])
def test_strict_keys(tmp_path, model, change, message):
    folder = save_pretrained(model, tmp_path / "m")
    state = load_file(folder / "model.safetensors")
    if change == "extra":
        state["probe.weight"] = torch.zeros(2)
    elif change == "drop":
        del state["mlp_head.1.bias"]
    else:
        state["mlp_head.1.bias"] = torch.zeros(7)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=message) as info:
        load_pretrained(folder)
    assert "model.safetensors" in str(info.value)


def test_bad_folders(tmp_path, model):
    with pytest.raises(ModelLoadError, match="missing config.json"):
        (tmp_path / "empty").mkdir()
        load_pretrained(tmp_path / "empty")
    folder = save_pretrained(model, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="model_type"):
        load_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "embed_dim": 100}))
    with pytest.raises(ModelLoadError, match="config.json"):
        load_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_pretrained(folder)


def test_hub_id_offline_not_cached(tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_pretrained("hf://emktd/no-such-student", cache_dir=tmp_path)


def test_hub_id_from_cache(tmp_path, model, monkeypatch):
    """A repo already in huggingface_hub's cache layout loads offline by its id (run from a folder
    without an emktd/ folder, so that the plain id can only be a repo id)."""
    monkeypatch.chdir(tmp_path)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--emktd--student"
    save_pretrained(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = load_pretrained("emktd/student", cache_dir=tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs(model)).logits, model(*inputs(model)).logits, rtol=0, atol=0)


def test_not_a_repo_id(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_pretrained(tmp_path / "nothing" / "here" / "at-all")


def test_a_typo_in_a_local_path_is_a_missing_folder_not_a_hub_lookup(tmp_path, model, monkeypatch):
    """``weights/techer`` has the form of a repo id, but ``weights/`` is a folder here: it is a local
    path, and the message names the folder and what it holds. Only a name that cannot be a local path
    (or one written hf://owner/name) is tried on the Hub, and the message says it was."""
    import huggingface_hub

    looked_up, real = [], huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: looked_up.append(repo) or 1 / 0)
    save_pretrained(model, tmp_path / "weights" / "teacher")
    monkeypatch.chdir(tmp_path)
    for typo in ("weights/techer", "./weights/techer", "weights/techer/", "weights/teacher/extra"):
        with pytest.raises(ModelLoadError) as info:
            load_pretrained(typo)
        assert str(info.value).startswith(f"{typo}: no such folder"), info.value
        assert "weights/ holds teacher" in str(info.value) or "weights/teacher/ holds no folders" in str(info.value)
    assert looked_up == []
    with pytest.raises(ModelLoadError, match=r"no such folder \(somewhere/else does not exist either\)"):
        load_pretrained("somewhere/else/deep")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", real)  # offline: not in the cache
    for name in ("emktd/student", "hf://emktd/student", "hf://weights/teacher"):
        with pytest.raises(ModelLoadError) as info:
            load_pretrained(name, cache_dir=tmp_path / "cache")
        message = str(info.value)
        assert message.startswith(f"{name.removeprefix('hf://')}: tried as a Hub repo id") and "HF_HUB_OFFLINE" in message
        assert ("no local folder of that name" in message) == (not name.startswith("hf://"))
    with pytest.raises(ModelLoadError, match="not a Hub repo id of the form hf://owner/name"):
        load_pretrained("hf://just-a-name")


def test_weights_holding_nan_are_refused_naming_the_file(tmp_path, model):
    folder = save_pretrained(model, tmp_path / "m")
    state = load_file(folder / "model.safetensors")
    state["mlp_head.1.bias"][0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError) as info:
        load_pretrained(folder)
    assert str(folder / "model.safetensors") in str(info.value) and "mlp_head.1.bias" in str(info.value)
    assert "NaN or infinite" in str(info.value)
