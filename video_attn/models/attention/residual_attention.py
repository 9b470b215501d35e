"""Residual attention module (Wang et al., "Residual Attention Network for Image Classification", CVPR 2017,
arXiv 1704.06904)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from video_attn.models.norm import GuardedBatchNorm2d

from .probe import AttentionProbe


class PreActBottleneckUnit(nn.Module):
    """Pre-activation bottleneck residual unit (He et al. 2016), the building block of the paper:
    ``x + conv1x1(ReLU(BN(conv3x3(ReLU(BN(conv1x1(ReLU(BN(x)))))))))`` with ``channels // 4`` inner width.

    BatchNorms are :class:`GuardedBatchNorm2d` because the mask branch reaches 1x1 maps on small inputs.
    ``zero_init_last`` zeroes the last conv so the unit starts as the identity.
    """

    def __init__(
        self, channels: int, bottleneck_ratio: int = 4, zero_init_last: bool = False, device=None, dtype=None
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        width = max(channels // bottleneck_ratio, 1)
        self.bn1 = GuardedBatchNorm2d(channels, **dd)
        self.conv1 = nn.Conv2d(channels, width, 1, bias=False, **dd)
        self.bn2 = GuardedBatchNorm2d(width, **dd)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False, **dd)
        self.bn3 = GuardedBatchNorm2d(width, **dd)
        self.conv3 = nn.Conv2d(width, channels, 1, bias=False, **dd)
        self.act = nn.ReLU()
        if zero_init_last:
            nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.bn1(x)))
        out = self.conv2(self.act(self.bn2(out)))
        out = self.conv3(self.act(self.bn3(out)))
        return x + out


def _units(num: int, channels: int, **kwargs) -> nn.Sequential:
    return nn.Sequential(*[PreActBottleneckUnit(channels, **kwargs) for _ in range(num)])


class ResidualAttention(nn.Module):
    """Attention module of the Residual Attention Network, used as a stage-level module.

    Wang et al., attention residual learning: ``H(x) = (1 + M(x)) * T(x)``, with
    - ``num_pre`` units before the split and ``num_pre`` after the product (paper p = 1),
    - trunk ``T``: ``num_trunk`` units (t = 2),
    - soft mask ``M``: bottom-up / top-down hourglass of ``depth`` down steps (max pool 3x3 stride 2, then
      ``num_mask_units`` units, r = 1; ``2r`` units at the lowest resolution), skip connections (one unit)
      added at every level on the way up, upsampling by interpolation to the exact size of the skip (so odd
      sizes work), a final interpolation to the input size, then ``BN-ReLU-conv1x1-BN-ReLU-conv1x1``
      and a sigmoid (mixed attention, paper's f1).
    The paper's Attention-56 uses depth 3, 2, 1 for its stages at 56, 28 and 14 px; the default here is 1
    (the deepest-stage setting), since the module does not know its stage; per-stage values go in as a
    4-entry list (``stage_module_kwargs: {depth: [3, 2, 1, 1]}``). Size: at ResNet-50 widths the
    defaults add 0.98 M (256 ch, depth 3), 3.05 M (512, depth 2), 8.80 M (1024, depth 1) and 35.2 M
    (2048, depth 1) parameters.

    Inputs and outputs (B, channels, H, W). ``zero_init_last=True`` zeroes the last conv of every residual
    unit, so pre / trunk / post units start as identities and ``H(x) = (1 + M(x)) * x`` with ``M`` in (0, 1):
    recommended when inserting the module into a pretrained backbone (the paper trains from scratch and has
    no such init, hence the default False). Works with channels_last, bf16 autocast and ``torch.compile``.
    Probe (:mod:`.probe`): ``probe`` carries the soft mask ``M(x)`` (B, channels, H, W), kind ``spatial``.

    Args:
        channels: input / output channels.
        depth: number of down steps of the mask hourglass (>= 1; the paper uses 1 to 3).
        num_pre, num_trunk, num_mask_units: p, t, r of the paper (1, 2, 1).
        upsample_mode: ``"bilinear"`` (paper) or ``"nearest"``.
        bottleneck_ratio: inner width divisor of the residual units (4).
        zero_init_last: start residual units as identities (see above).
    """

    def __init__(
        self,
        channels: int,
        depth: int = 1,
        num_pre: int = 1,
        num_trunk: int = 2,
        num_mask_units: int = 1,
        upsample_mode: str = "bilinear",
        bottleneck_ratio: int = 4,
        zero_init_last: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if depth < 1:
            raise ValueError(f"ResidualAttention depth must be >= 1, got {depth}")
        if upsample_mode not in ("bilinear", "nearest"):
            raise ValueError(
                f"ResidualAttention upsample_mode must be 'bilinear' or 'nearest', got {upsample_mode!r}"
            )
        unit = {"bottleneck_ratio": bottleneck_ratio, "zero_init_last": zero_init_last, **dd}
        self.depth = depth
        self.upsample_mode = upsample_mode
        self.pre = _units(num_pre, channels, **unit)
        self.trunk = _units(num_trunk, channels, **unit)
        self.mask_down = nn.ModuleList([_units(num_mask_units, channels, **unit) for _ in range(depth)])
        self.mask_skip = nn.ModuleList([_units(1, channels, **unit) for _ in range(depth - 1)])
        self.mask_bottom = _units(num_mask_units, channels, **unit)
        self.mask_up = nn.ModuleList([_units(num_mask_units, channels, **unit) for _ in range(depth - 1)])
        self.mask_out = nn.Sequential(
            GuardedBatchNorm2d(channels, **dd),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False, **dd),
            GuardedBatchNorm2d(channels, **dd),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False, **dd),
        )
        self.post = _units(num_pre, channels, **unit)
        self.probe = AttentionProbe("spatial")

    def _upsample(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.upsample_mode == "bilinear":
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=size, mode="nearest")

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Soft mask ``M(x)`` in (0, 1), same shape as ``x``."""
        m = x
        skips = []
        for level in range(self.depth):
            m = self.mask_down[level](F.max_pool2d(m, kernel_size=3, stride=2, padding=1))
            if level < self.depth - 1:
                skips.append(self.mask_skip[level](m))
        m = self.mask_bottom(m)
        for level in reversed(range(self.depth - 1)):
            m = self.mask_up[level](self._upsample(m, skips[level].shape[-2:]) + skips[level])
        m = self._upsample(m, x.shape[-2:])
        return torch.sigmoid(self.mask_out(m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        out = (1 + self.probe(self.mask(x))) * self.trunk(x)
        return self.post(out)
