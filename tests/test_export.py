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


def test_audio_once_per_clip_gives_what_the_repeated_fbank_gives(exported):
    """One fbank for a clip's five frames (the audio blocks run once) against the fbank copied to every
    frame (each frame its own sample): the same logits, masks and tokens, in torch and in onnxruntime."""
    model, path = exported
    c = model.config
    torch.manual_seed(1)
    audio, frames = torch.randn(2, c.audio_frames, c.num_mel_bins), torch.randn(2, 5, 3, c.image_size, c.image_size)
    with torch.no_grad():
        repeated = model(audio.repeat_interleave(5, dim=0), frames.flatten(0, 1))
        once = model(audio, frames)
    onnx_once = OnnxModel(path, c)(audio, frames)
    for name in ("logits", "audio_tokens", "visual_tokens", "fused_tokens", "mask_logits"):
        expected = getattr(repeated, name)
        assert getattr(once, name).shape == expected.shape == (10, *expected.shape[1:])
        torch.testing.assert_close(getattr(once, name), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(getattr(onnx_once, name), expected, atol=1e-5, rtol=0)


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


def test_a_decoder_with_pixel_skips_and_block_taps_exports(tmp_path):
    model = create_model("bench-student", seg_skip_channels=8, seg_visual_taps=2, num_classes=3).eval()
    path = export_onnx(model, tmp_path / "skips.onnx")
    result = check(model, path, batch=2)
    assert result["logits_max_abs_diff"] < 1e-4 and result["mask_agreement"] >= 0.999
