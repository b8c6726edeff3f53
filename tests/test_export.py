import pytest
import torch

from emktd.export import OnnxModel, check, export_onnx, main
from emktd.hub import save_pretrained
from emktd.models import create_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("bench-student", num_classes=5).eval()
    folder = save_pretrained(model, tmp_path_factory.mktemp("student") / "student")
    return model, export_onnx(model, folder / "model.onnx")


def test_onnxruntime_matches_torch(exported):
    model, path = exported
    result = check(model, path, batch=3)
    assert result["logits_max_abs_diff"] < 1e-4
    assert result["mask_agreement"] >= 0.999


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch_and_outputs(exported, batch):
    model, path = exported
    c = model.config
    out = OnnxModel(path, c)(torch.randn(batch, c.audio_frames, c.num_mel_bins),
                             torch.randn(batch, 3, c.image_size, c.image_size))
    assert out.logits.shape == (batch, 5) and out.mask_logits.shape == (batch, 1, c.image_size, c.image_size)
    assert out.fused_tokens.shape[0] == batch and out.audio_tokens.shape[-1] == c.embed_dim


def test_model_without_decoder_exports_without_masks(tmp_path):
    model = create_model("bench-student", seg_decoder_dim=0, num_classes=3).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    c = model.config
    out = OnnxModel(path, c)(torch.randn(1, c.audio_frames, c.num_mel_bins), torch.randn(1, 3, c.image_size, c.image_size))
    assert out.mask_logits is None and "mask_agreement" not in check(model, path, batch=1)


def test_command_line(tmp_path, capsys):
    save_pretrained(create_model("bench-student", num_classes=4), tmp_path / "m")
    main([str(tmp_path / "m")])
    printed = capsys.readouterr().out
    agreement = float(printed.split("mask_agreement ")[1].split(" %")[0])
    assert (tmp_path / "m" / "model.onnx").is_file() and agreement >= 99.9
