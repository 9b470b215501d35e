"""ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) with pluggable attention,
in torchvision's ``models/resnet.py`` layout so torchvision ImageNet state_dicts load unchanged.

Input (N*T, 3, H, W) frames; ``forward`` -> pooled features (N*T, num_features); ``forward_features`` ->
(N*T, num_features, H/32, W/32) (H/16 with ``last_stride=1``). There is no fc layer: a torchvision ``fc.*``
key in a pretrained file is reported as unexpected and ignored.

Extension points of every block (BasicBlock and Bottleneck), in forward order::

    identity = x
    x = shift(x)                                   # nn.Identity; action models put TSM here
    x = conv1 -> bn1 -> relu
    x = temporal(x)                                # nn.Identity; action models put TAM here
    ...                                            # rest of the branch (below)
    x = attn(x)                                    # gate after the last BN (create_attn), nn.Identity if none
    x = residual(x, identity) or x + identity      # Highway etc. (create_residual), then relu

Conv-replacement rule (``conv=``): the replaced conv is the 3x3 conv that carries the block's stride and
is followed by BN + ReLU, i.e. ``Bottleneck.conv2`` (torchvision position, as in SKNet / ResNeSt
bottlenecks) and ``BasicBlock.conv1`` (as timm's ``SelectiveKernelBasic``). A replacement with
``includes_norm_act = True`` brings that BN + ReLU itself, so the block's following BN becomes
``nn.Identity`` and the ReLU after it is skipped. In a BasicBlock the ``temporal`` slot thus comes after the
replaced conv, in a Bottleneck before it.

Per-stage options: ``attention`` / ``conv`` take one name or a list of 4 names (one per stage; ``"none"``
leaves a stage plain). List-valued kwargs with 4 entries are resolved per stage
(``factory.resolve_stage_kwargs``).

Stage modules (``stage_module``: one ``STAGE_MODULES`` name such as ``"residual_attention"`` for every
stage, or a list of 4 names with ``"none"`` for stages without one) run after their stage. They are kept in
``self.stage_modules`` (a ModuleDict keyed ``"layer2"`` ...) so torchvision key names stay untouched.

Differences from torchvision: ``base_width`` scales every stage (64 = torchvision; tiny values give CPU test
models); ``last_stride=1`` keeps layer4 at stride 1 (ReID); ``frozen_bn`` keeps the backbone's own BN layers
(stem, bn1/2/3, downsample; not the BNs inside new attention modules, which start untrained) in eval mode with
frozen parameters, also after ``model.train()``; ``grad_checkpointing`` recomputes each block in backward
(training only) and restores BN running statistics after the recomputation so a batch is counted once.
Only the backbone's own layers get torchvision's init (kaiming fan_out, BN 1/0): attention modules keep
their documented init (e.g. CBAM's zero BN weight).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from video_attn.models.attention.factory import (
    create_attn,
    create_conv,
    create_residual,
    create_stage_module,
    resolve_stage_kwargs,
    resolve_stage_names,
)

logger = logging.getLogger(__name__)

NUM_STAGES = 4

# torchvision names of the backbone's own conv / BN layers (not those inside attention or conv replacements)
_OWN_LAYER = re.compile(r"^(conv1|bn1|layer\d+\.\d+\.(conv\d|bn\d|downsample\.[01]))$")


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class _Block(nn.Module):
    """Shared slots and residual tail of BasicBlock and Bottleneck."""

    expansion = 1

    def _init_slots(self, attn: nn.Module | None, residual: nn.Module | None) -> None:
        self.shift: nn.Module = nn.Identity()
        self.temporal: nn.Module = nn.Identity()
        self.attn: nn.Module = attn if attn is not None else nn.Identity()
        self.residual = residual

    def _merge(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        out = self.attn(out)
        if self.residual is not None:
            out = self.residual(out, identity)
        else:
            # a new tensor, not torchvision's ``+=``: a hook on the gate may keep the gate's output
            out = out + identity
        return self.relu(out)


class BasicBlock(_Block):
    """Two 3x3 convs (ResNet-18/34). ``conv1`` (stride-carrying) is the conv-replacement position."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn: str | None = "none",
        attn_kwargs: dict[str, Any] | None = None,
        conv: str | None = "none",
        conv_kwargs: dict[str, Any] | None = None,
        residual: str | None = "standard",
        residual_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = create_conv(conv, inplanes, planes, 3, stride=stride, **(conv_kwargs or {}))
        self._conv_norm_act = bool(getattr(self.conv1, "includes_norm_act", False))
        self.bn1 = nn.Identity() if self._conv_norm_act else nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = create_conv("none", planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self._init_slots(
            create_attn(attn, planes, **(attn_kwargs or {})),
            create_residual(residual, planes, **(residual_kwargs or {})),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.shift(x)
        out = self.conv1(out)
        if not self._conv_norm_act:
            out = self.relu(self.bn1(out))
        out = self.temporal(out)
        out = self.bn2(self.conv2(out))
        return self._merge(out, identity)


class Bottleneck(_Block):
    """1x1 -> 3x3 (stride, as torchvision "ResNet V1.5") -> 1x1 (x4). ``conv2`` is the conv-replacement
    position."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn: str | None = "none",
        attn_kwargs: dict[str, Any] | None = None,
        conv: str | None = "none",
        conv_kwargs: dict[str, Any] | None = None,
        residual: str | None = "standard",
        residual_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = create_conv(conv, planes, planes, 3, stride=stride, **(conv_kwargs or {}))
        self._conv_norm_act = bool(getattr(self.conv2, "includes_norm_act", False))
        self.bn2 = nn.Identity() if self._conv_norm_act else nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self._init_slots(
            create_attn(attn, out_channels, **(attn_kwargs or {})),
            create_residual(residual, out_channels, **(residual_kwargs or {})),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.shift(x)
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.temporal(out)
        out = self.conv2(out)
        if not self._conv_norm_act:
            out = self.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        return self._merge(out, identity)


@contextmanager
def _keep_bn_stats(module: nn.Module) -> Iterator[None]:
    """Restore BN running statistics after the body: checkpoint recomputation must not count a batch twice."""
    saved = [
        (m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, count in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


class ResNet(nn.Module):
    """ResNet backbone without fc, torchvision parameter names.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. (3, 4, 6, 3).
        base_width: stem width (64 = torchvision); stage widths are base_width * (1, 2, 4, 8).
        last_stride: stride of layer4 (2 torchvision, 1 ReID).
        attention: gate name for every stage, or a list of 4 names.
        attention_kwargs: gate options; 4-entry lists are per stage.
        conv: 3x3 conv replacement name, or a list of 4 names.
        conv_kwargs: conv-replacement options; 4-entry lists are per stage.
        residual: ``"standard"`` (add) or a ``RESIDUALS`` name.
        residual_kwargs: options of the residual module; 4-entry lists are per stage.
        stage_module: module after each stage (``STAGE_MODULES`` name or ``"none"``), or a list of 4 names.
        stage_module_kwargs: its options; 4-entry lists are per stage.
        frozen_bn: keep the backbone's own BN layers in eval mode with frozen affine parameters.
        grad_checkpointing: recompute each block in backward (training only).
        zero_init_residual: zero the last BN weight of each block (torchvision option, default off).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int] | tuple[int, ...],
        base_width: int = 64,
        last_stride: int = 2,
        attention: str | list[str] | None = "none",
        attention_kwargs: dict[str, Any] | None = None,
        conv: str | list[str] | None = "none",
        conv_kwargs: dict[str, Any] | None = None,
        residual: str | None = "standard",
        residual_kwargs: dict[str, Any] | None = None,
        stage_module: str | list[str] | None = "none",
        stage_module_kwargs: dict[str, Any] | None = None,
        frozen_bn: bool = False,
        grad_checkpointing: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != NUM_STAGES:
            raise ValueError(f"layers must have {NUM_STAGES} entries, got {layers}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        if base_width < 1:
            raise ValueError(f"base_width must be positive, got {base_width}")
        attn_names = resolve_stage_names(attention, "attention")
        conv_names = resolve_stage_names(conv, "conv")
        stage_module_names = resolve_stage_names(stage_module, "stage_module")

        self.frozen_bn = frozen_bn
        self.grad_checkpointing = grad_checkpointing
        self.inplanes = base_width
        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        strides = (1, 2, 2, last_stride)
        for i in range(NUM_STAGES):
            layer = self._make_layer(
                block,
                base_width * 2**i,
                layers[i],
                strides[i],
                attn=attn_names[i],
                attn_kwargs=resolve_stage_kwargs(attention_kwargs, i),
                conv=conv_names[i],
                # a plain stage in a per-stage list takes none of the replacement's options
                conv_kwargs=resolve_stage_kwargs(conv_kwargs, i) if conv_names[i] != "none" else {},
                residual=residual,
                residual_kwargs=resolve_stage_kwargs(residual_kwargs, i),
            )
            self.add_module(f"layer{i + 1}", layer)
        self.num_features = self.inplanes

        self.stage_modules = nn.ModuleDict()
        for i, name in enumerate(stage_module_names):
            # a plain stage in a per-stage list takes none of the module's options
            kwargs = resolve_stage_kwargs(stage_module_kwargs, i) if name != "none" else {}
            module = create_stage_module(name, base_width * 2**i * block.expansion, **kwargs)
            if module is not None:
                self.stage_modules[f"layer{i + 1}"] = module

        self._init_own_layers(zero_init_residual)
        if frozen_bn:
            for m in self._own_bn_layers():
                m.requires_grad_(False)
            self.train(self.training)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        num_blocks: int,
        stride: int,
        **block_kwargs: Any,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        blocks = [block(self.inplanes, planes, stride, downsample, **block_kwargs)]
        self.inplanes = planes * block.expansion
        for _ in range(1, num_blocks):
            blocks.append(block(self.inplanes, planes, **block_kwargs))
        return nn.Sequential(*blocks)

    def _own_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """The convs and BNs torchvision has (stem, blocks, downsample); not attention / replacements."""
        for name, m in self.named_modules():
            if _OWN_LAYER.match(name) and isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                yield name, m

    def _own_bn_layers(self) -> list[nn.BatchNorm2d]:
        return [m for _, m in self._own_layers() if isinstance(m, nn.BatchNorm2d)]

    def _init_own_layers(self, zero_init_residual: bool) -> None:
        # torchvision's init, restricted to its own layers: attention modules keep their documented init
        for _, m in self._own_layers():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for blk in self.blocks():
                last_bn = blk.bn3 if isinstance(blk, Bottleneck) else blk.bn2
                if isinstance(last_bn, nn.BatchNorm2d):
                    nn.init.zeros_(last_bn.weight)

    @property
    def stages(self) -> list[nn.Sequential]:
        """[layer1, layer2, layer3, layer4]."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def blocks(self) -> Iterator[BasicBlock | Bottleneck]:
        """Every residual block, stage by stage."""
        for stage in self.stages:
            yield from stage

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        if self.frozen_bn:
            for m in self._own_bn_layers():
                m.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and self.training):
            return stage(x)  # called as a module so hooks registered on a stage fire
        for blk in stage:
            x = torch.utils.checkpoint.checkpoint(
                blk,
                x,
                use_reentrant=False,
                context_fn=lambda blk=blk: (nullcontext(), _keep_bn_stats(blk)),
            )
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_features, h, w)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet expects (N*T, 3, H, W) input, got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i, stage in enumerate(self.stages):
            x = self._run_stage(stage, x)
            key = f"layer{i + 1}"
            if key in self.stage_modules:
                x = self.stage_modules[key](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_features) global-average-pooled features."""
        return self.forward_features(x).mean((2, 3))


_ARCHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (512 features at base_width 64)."""
    return ResNet(*_ARCHS[18], **kwargs)


def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (512 features at base_width 64)."""
    return ResNet(*_ARCHS[34], **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (2048 features at base_width 64; 23,508,032 parameters without fc)."""
    return ResNet(*_ARCHS[50], **kwargs)


def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 (2048 features at base_width 64)."""
    return ResNet(*_ARCHS[101], **kwargs)


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"pretrained weights not found: {path} (a local file is required)") from None
    except Exception as e:  # unpickling errors name the file, not the cause, so wrap them
        raise RuntimeError(f"cannot read pretrained weights {path}: {e}") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{path}: expected a state_dict (name -> tensor) or a dict holding one under 'state_dict'/'model'"
        )
    prefix = "module."
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in obj.items()}


def load_pretrained(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load a torchvision-layout state_dict from the local file ``path`` into ``model`` (strict=False).

    Accepts a raw state_dict or a checkpoint dict with ``state_dict`` / ``model``; strips ``module.``.
    Keys the model has but the file lacks (attention, conv replacements) keep their init; keys the file has
    but the model lacks (torchvision ``fc.*``) are ignored. Both lists are logged and returned as
    ``(missing, unexpected)``. A shape mismatch raises ValueError naming the key and both shapes.
    """
    state = _read_state_dict(path)
    own = model.state_dict()
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(f"{path}: shape mismatch for {len(mismatched)} key(s): " + "; ".join(mismatched))
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    logger.info(
        "loaded %s: %d tensors, %d missing (keep init), %d unexpected (ignored)",
        path,
        len(state) - len(unexpected),
        len(missing),
        len(unexpected),
    )
    if missing:
        logger.info("missing keys: %s", missing)
    if unexpected:
        logger.info("unexpected keys: %s", unexpected)
    return missing, unexpected


def build_backbone(backbone_cfg: Any) -> ResNet:
    """ResNet from a ``BackboneConfig`` (video_attn.config.schema), loading ``pretrained`` if set."""
    depth = backbone_cfg.depth
    if depth not in _ARCHS:
        raise ValueError(f"model.backbone.depth={depth!r}; valid: {', '.join(map(str, _ARCHS))}")
    try:
        model = ResNet(
            *_ARCHS[depth],
            base_width=backbone_cfg.base_width,
            last_stride=backbone_cfg.last_stride,
            attention=backbone_cfg.attention,
            attention_kwargs=dict(backbone_cfg.attention_kwargs),
            conv=backbone_cfg.conv,
            conv_kwargs=dict(backbone_cfg.conv_kwargs),
            residual=backbone_cfg.residual,
            residual_kwargs=dict(backbone_cfg.residual_kwargs),
            stage_module=backbone_cfg.stage_module,
            stage_module_kwargs=dict(backbone_cfg.stage_module_kwargs),
            frozen_bn=backbone_cfg.frozen_bn,
            grad_checkpointing=backbone_cfg.grad_checkpointing,
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"model.backbone: {e}") from e
    if backbone_cfg.pretrained:
        load_pretrained(model, backbone_cfg.pretrained)
    return model
