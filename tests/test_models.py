import json
import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from emktd.models import PRESETS, AVConfig, AVTransformer, create_model, load_cavmae_checkpoint

# Every parameter name and shape of the official CAV-MAE VGGSound fine-tuned checkpoint.
FIXTURE = Path(__file__).parent / "fixtures" / "cavmae_vggsound_ft_keys.json"


def fixture_keys() -> dict:
    return json.loads(FIXTURE.read_text())


def test_cavmae_base_has_the_checkpoint_layout():
    fixture = fixture_keys()
    with torch.device("meta"):
        model = create_model("cavmae-base")
    assert model.num_parameters() == fixture["num_parameters"] == 164_739_381
    ours = {f"module.{k}": list(v.shape) for k, v in model.state_dict().items()}
    assert ours == fixture["keys"]


def test_preset_sizes():
    with torch.device("meta"):
        base, tiny = create_model("cavmae-base"), create_model("cavmae-tiny")
        teacher, student = create_model("bench-teacher"), create_model("bench-student")
    assert 9.5e6 < tiny.num_parameters() < 11e6
    assert student.num_parameters() <= 0.06 * teacher.num_parameters()
    assert student.config.audio_grid == teacher.config.audio_grid
    assert base.config.audio_grid == (8, 64) and base.config.visual_grid == (14, 14)


def test_forward_shapes_and_modes():
    torch.manual_seed(0)
    model = create_model("bench-student").eval()
    c = model.config
    audio, frames = torch.randn(2, c.audio_frames, c.num_mel_bins), torch.randn(2, 3, c.image_size, c.image_size)
    na, nv = math.prod(c.audio_grid), math.prod(c.visual_grid)
    out = model(audio, frames)
    assert out.logits.shape == (2, c.num_classes)
    assert out.audio_tokens.shape == (2, na, c.embed_dim) and out.visual_tokens.shape == (2, nv, c.embed_dim)
    assert out.fused_tokens.shape == (2, na + nv, c.embed_dim)
    assert out.mask_logits.shape == (2, 1, c.image_size, c.image_size)
    torch.testing.assert_close(out.logits, model.mlp_head(out.fused_tokens.mean(1)))
    assert list(out.tokens()) == ["audio", "visual", "fused"]
    assert {m: sum(h * w for h, w in g) for m, g in c.token_grids.items()} == {"audio": na, "visual": nv, "fused": na + nv}
    audio_only = model(audio=audio)
    assert audio_only.visual_tokens is None and audio_only.mask_logits is None
    assert audio_only.fused_tokens.shape == (2, na, c.embed_dim)
    assert list(audio_only.tokens()) == ["audio", "fused"]
    visual_only = model(frames=frames)
    assert visual_only.audio_tokens is None and visual_only.mask_logits.shape == (2, 1, c.image_size, c.image_size)


def test_single_modality_modes_use_their_own_norms():
    torch.manual_seed(0)
    model = create_model("bench-student").eval()
    c = model.config
    audio, frames = torch.randn(1, c.audio_frames, c.num_mel_bins), torch.randn(1, 3, c.image_size, c.image_size)
    joint, audio_only = model(audio, frames).logits, model(audio=audio).logits
    with torch.no_grad():
        model.blocks_u[0].norm1_a.weight.mul_(3.0)
        model.norm_a.bias.add_(1.0)
    assert torch.allclose(model(audio, frames).logits, joint)
    assert not torch.allclose(model(audio=audio).logits, audio_only)


def test_bad_inputs_and_configs():
    model = create_model("bench-student")
    with pytest.raises(ValueError, match="fbank"):
        model(torch.randn(1, 100, 128))
    with pytest.raises(ValueError, match="at least one"):
        model()
    with pytest.raises(ValueError, match="multiple of patch_size"):
        AVConfig(image_size=100)
    with pytest.raises(ValueError, match="unknown model preset"):
        create_model("vit-huge")


def test_resolution_override():
    model = create_model("cavmae-tiny", image_size=112)
    assert model.visual_grid == (7, 7) and model.pos_embed_v.shape == (1, 49, 192)


def random_cavmae_state(generator) -> dict[str, torch.Tensor]:
    state = {}
    for key, shape in fixture_keys()["keys"].items():
        if key.endswith(".weight") and len(shape) == 1:  # LayerNorm scales
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            state[key] = 0.02 * torch.randn(shape, generator=generator)
    return state


def reference_block(x, p, prefix, norm, heads):
    """One timm-style block computed straight from the raw checkpoint tensors."""
    c = x.shape[-1]
    h = F.layer_norm(x, (c,), p[f"{prefix}norm1{norm}.weight"], p[f"{prefix}norm1{norm}.bias"])
    qkv = h @ p[f"{prefix}attn.qkv.weight"].t() + p[f"{prefix}attn.qkv.bias"]
    b, n = x.shape[:2]
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) * (c // heads) ** -0.5, dim=-1)
    x = x + ((attn @ v).transpose(1, 2).reshape(b, n, c) @ p[f"{prefix}attn.proj.weight"].t()
             + p[f"{prefix}attn.proj.bias"])
    h = F.layer_norm(x, (c,), p[f"{prefix}norm2{norm}.weight"], p[f"{prefix}norm2{norm}.bias"])
    h = F.gelu(h @ p[f"{prefix}mlp.fc1.weight"].t() + p[f"{prefix}mlp.fc1.bias"])
    return x + h @ p[f"{prefix}mlp.fc2.weight"].t() + p[f"{prefix}mlp.fc2.bias"]


def reference_forward(p, fbank, frames, heads=12):
    """CAV-MAE's fine-tuned multimodal forward, from the raw tensors."""
    p = {k.removeprefix("module."): v for k, v in p.items()}
    a = F.conv2d(fbank.unsqueeze(1).transpose(2, 3), p["patch_embed_a.proj.weight"], p["patch_embed_a.proj.bias"],
                 stride=16).flatten(2).transpose(1, 2) + p["pos_embed_a"] + p["modality_a"]
    v = F.conv2d(frames, p["patch_embed_v.proj.weight"], p["patch_embed_v.proj.bias"],
                 stride=16).flatten(2).transpose(1, 2) + p["pos_embed_v"] + p["modality_v"]
    embedded = a
    for i in range(11):
        a = reference_block(a, p, f"blocks_a.{i}.", "", heads)
        v = reference_block(v, p, f"blocks_v.{i}.", "", heads)
    x = reference_block(torch.cat([a, v], 1), p, "blocks_u.0.", "", heads)
    x = F.layer_norm(x, (x.shape[-1],), p["norm.weight"], p["norm.bias"]).mean(1)
    x = F.layer_norm(x, (x.shape[-1],), p["mlp_head.0.weight"], p["mlp_head.0.bias"])
    return embedded, x @ p["mlp_head.1.weight"].t() + p["mlp_head.1.bias"]


def test_official_checkpoint_converts_and_computes_the_same(tmp_path):
    generator = torch.Generator().manual_seed(0)
    raw = random_cavmae_state(generator)
    path = tmp_path / "vgg_65.5.pth"
    torch.save(raw, path)
    model = load_cavmae_checkpoint(path).eval()
    path.unlink()  # 630 MB: not kept for the rest of the session
    assert model.config.num_classes == 309 and model.config.depth_audio == 11
    assert model.num_parameters() == 164_739_381
    fbank = torch.randn(1, 1024, 128, generator=generator)
    frames = torch.randn(1, 3, 224, 224, generator=generator)
    with torch.no_grad():
        embedded, logits = reference_forward(raw, fbank, frames)
        torch.testing.assert_close(model.embed_audio(fbank), embedded)
        x = torch.randn(1, 708, 768, generator=generator)
        torch.testing.assert_close(model.blocks_u[0](x), reference_block(x, {k[7:]: v for k, v in raw.items()},
                                                                         "blocks_u.0.", "", 12), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model(fbank, frames).logits, logits, atol=1e-4, rtol=1e-3)


class NotATensor:
    pass


def test_checkpoint_loading_is_weights_only_and_strict(tmp_path):
    pickled = tmp_path / "pickled.pth"
    with open(pickled, "wb") as f:
        pickle.dump({"module.x": NotATensor()}, f, protocol=2)
    with pytest.raises(ValueError, match="weights-only"):
        load_cavmae_checkpoint(pickled)
    student = create_model("bench-student")
    state = {f"module.{k}": v for k, v in student.state_dict().items()}
    state["module.extra.weight"] = torch.zeros(3)
    odd = tmp_path / "odd.pth"
    torch.save(state, odd)
    with pytest.raises(ValueError, match=r"odd\.pth.*unexpected"):
        load_cavmae_checkpoint(odd)
    del state["module.extra.weight"], state["module.norm.bias"]
    torch.save(state, odd)
    with pytest.raises(ValueError, match=r"odd\.pth.*missing"):
        load_cavmae_checkpoint(odd)


def test_converted_teacher_can_grow_a_mask_decoder(tmp_path):
    student = create_model("cavmae-tiny", num_classes=5)
    path = tmp_path / "tiny.pth"
    torch.save({f"module.{k}": v for k, v in student.state_dict().items()}, path)
    model = load_cavmae_checkpoint(path, seg_decoder_dim=32)
    assert model.mask_decoder is not None and model.config.embed_dim == 192 and model.config.num_heads == 3
    torch.testing.assert_close(model.blocks_a[3].attn.qkv.weight, student.blocks_a[3].attn.qkv.weight)


def test_presets_are_valid_configs():
    for name, config in PRESETS.items():
        assert AVConfig.from_dict(config.to_dict()) == config, name
    assert isinstance(create_model("bench-teacher"), AVTransformer)


def test_pixel_skips_feed_the_mask_decoder(tmp_path):
    """seg_skip_channels adds shallow features of the frame at 1/2 and 1/4 resolution to the mask
    decoder: the masks then depend on pixel detail inside one token, and folders saved before the
    option existed still load (without skips)."""
    import json

    from emktd.hub import load_pretrained, save_pretrained

    torch.manual_seed(0)
    plain, skipped = create_model("bench-student"), create_model("bench-student", seg_skip_channels=8)
    assert skipped.num_parameters() - plain.num_parameters() == sum(
        p.numel() for p in skipped.mask_decoder.skips.parameters()) + 2 * 8 * 8 * 9  # two 3x3 convs, 8 inputs wider
    c = skipped.config
    audio, frames = torch.randn(1, c.audio_frames, c.num_mel_bins), torch.randn(1, 3, c.image_size, c.image_size)
    nudged = frames.clone()
    nudged[..., 3, 3] += 5.0  # one pixel: the same tokens nearly, another outline
    with torch.no_grad():
        change = {name: model(audio, nudged).mask_logits - model(audio, frames).mask_logits
                  for name, model in (("plain", plain), ("skipped", skipped))}
    assert change["skipped"].shape == (1, 1, c.image_size, c.image_size)
    near, far = (change["skipped"][..., :8, :8].abs().max(), change["skipped"][..., 64:, 64:].abs().max())
    assert near > 100 * far  # the change stays where the pixel is ...
    assert near > 10 * change["plain"][..., :8, :8].abs().max()  # ... and is larger than through the tokens
    skipped(audio, frames).mask_logits.mean().backward()
    assert skipped.mask_decoder.skips.down2[0].weight.grad.abs().sum() > 0
    folder = save_pretrained(plain, tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    del config["seg_skip_channels"]  # a folder from before the option
    (folder / "config.json").write_text(json.dumps(config))
    assert load_pretrained(folder).config.seg_skip_channels == 0


def test_the_mask_decoder_reads_tokens_of_earlier_blocks():
    """seg_visual_taps: the decoder adds 1x1 projections of earlier visual blocks' token grids to
    the fused grid's; with those projections at zero the masks are the plain decoder's."""
    assert [create_model("bench-teacher", seg_visual_taps=n).config.tap_blocks for n in (0, 1, 2, 3, 4)] == [
        (), (4,), (2, 4), (1, 3, 4), (1, 2, 3, 4)]
    with pytest.raises(ValueError, match="seg_visual_taps 3 is not between 0 and depth_visual 2"):
        create_model("bench-student", seg_visual_taps=3)
    torch.manual_seed(0)
    plain, tapped = create_model("bench-student", seg_visual_taps=0), create_model("bench-student", seg_visual_taps=2)
    c = tapped.config
    assert tapped.num_parameters() - plain.num_parameters() == 2 * (c.embed_dim * c.seg_decoder_dim + c.seg_decoder_dim)
    tapped.load_state_dict(plain.state_dict(), strict=False)
    audio, frames = torch.randn(2, c.audio_frames, c.num_mel_bins), torch.randn(2, 3, c.image_size, c.image_size)
    with torch.no_grad():
        for proj in tapped.mask_decoder.tap_proj:
            proj.weight.zero_()
            proj.bias.zero_()
        torch.testing.assert_close(tapped(audio, frames).mask_logits, plain(audio, frames).mask_logits)
        tapped.mask_decoder.tap_proj[0].weight.normal_()
        assert not torch.allclose(tapped(audio, frames).mask_logits, plain(audio, frames).mask_logits)
        assert tapped(audio=None, frames=frames).mask_logits.shape == (2, 1, c.image_size, c.image_size)
    tapped(audio, frames).mask_logits.mean().backward()
    assert all(p.weight.grad.abs().sum() > 0 for p in tapped.mask_decoder.tap_proj)
