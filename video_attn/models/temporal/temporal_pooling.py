"""Video ReID temporal aggregation baselines (Gao & Nevatia, "Revisiting Temporal Modeling for Video-based
Person ReID", arXiv 1805.02104; official code jiyanggao/Video-Person-ReID).

All three take per-frame features and return one tracklet feature:

* :class:`TemporalAvgPool` - "temporal pooling": mean over T of the GAP frame features,
  ``(B, T, C) -> (B, C)``.
* :class:`TemporalAttentionPool` - "temporal attention": a spatial conv whose kernel covers the whole final
  feature map (official: ``Conv2d(2048, 256, (7, 4))`` for 224x112 input) -> ReLU gives one 256-d vector per
  frame; a temporal ``Conv1d(256, 1, 3, padding=1)`` -> ReLU gives one score per frame; scores are normalised
  over T by softmax (default) or sigmoid + L1 normalisation; the output is the score-weighted sum of the GAP
  frame features. Needs the spatial maps: :meth:`frame_features` turns ``(N*T, C, h, w)`` maps into per-frame
  vectors ``[GAP (C), attention embedding (256)]`` so a model can embed long tracklets chunk by chunk.
  If the map is larger than the kernel (another input size) the conv output is averaged over the remaining
  positions (the official code requires kernel == map size).
* :class:`RecurrentPool` - "RNN": a one-layer recurrent net over the frame features, outputs averaged over T,
  ``(B, T, C) -> (B, hidden)``. The paper / official code use an LSTM with 512 hidden units; ``cell="gru"``
  (default of the ``gru`` arch) uses a GRU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from video_attn.models.attention.probe import AttentionProbe


class TemporalAvgPool(nn.Module):
    """Mean over time: ``(B, T, C) -> (B, C)``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class TemporalAttentionPool(nn.Module):
    """Temporal attention pooling of Gao & Nevatia 2018 (see module docstring).

    Args:
        in_channels: backbone channels C (2048 for ResNet-50).
        spatial_kernel: (h, w) of the spatial attention conv; the official value (7, 4) is the final map of a
            224x112 input with last stride 2.
        mid_channels: width of the spatial attention conv (official 256).
        normalize: ``"softmax"`` (official default) or ``"sigmoid"`` (sigmoid scores, L1-normalised over T).

    ``frame_features``: ``(N*T, C, h, w) -> (N*T, C + mid_channels)``; ``forward``: ``(B, T, C + mid_channels)
    -> (B, C)``. Probe (:mod:`video_attn.models.attention.probe`): ``probe`` carries the frame weights (B, T),
    kind ``temporal_attention``.
    """

    def __init__(
        self,
        in_channels: int = 2048,
        spatial_kernel: Sequence[int] = (7, 4),
        mid_channels: int = 256,
        normalize: str = "softmax",
    ) -> None:
        super().__init__()
        if normalize not in ("softmax", "sigmoid"):
            raise ValueError(f"TemporalAttentionPool normalize={normalize!r}; valid: 'softmax', 'sigmoid'")
        self.in_channels = in_channels
        self.mid_channels = mid_channels
        self.out_channels = in_channels
        self.normalize = normalize
        self.spatial_kernel = tuple(int(k) for k in spatial_kernel)
        self.attention_conv = nn.Conv2d(in_channels, mid_channels, self.spatial_kernel)
        self.attention_tconv = nn.Conv1d(mid_channels, 1, kernel_size=3, padding=1)
        self.probe = AttentionProbe("temporal_attention")

    def frame_features(self, maps: torch.Tensor) -> torch.Tensor:
        """Per-frame ``[GAP(map), ReLU(spatial conv(map))]``: ``(N*T, C, h, w) -> (N*T, C + mid)``."""
        h, w = maps.shape[-2:]
        kh, kw = self.spatial_kernel
        if h < kh or w < kw:
            raise ValueError(
                f"TemporalAttentionPool: feature map {h}x{w} is smaller than the spatial kernel {kh}x{kw}; "
                "set model.temporal_kwargs.spatial_kernel to the backbone's output size"
            )
        pooled = maps.mean(dim=(2, 3))
        att = F.relu(self.attention_conv(maps)).mean(dim=(2, 3))
        return torch.cat([pooled, att], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, att = x.split([self.in_channels, self.mid_channels], dim=2)  # (B, T, C), (B, T, mid)
        scores = F.relu(self.attention_tconv(att.transpose(1, 2))).squeeze(1)  # (B, T)
        if self.normalize == "softmax":
            weights = torch.softmax(scores, dim=1)
        else:
            weights = F.normalize(torch.sigmoid(scores), p=1, dim=1)
        return (feats * self.probe(weights).unsqueeze(-1)).sum(dim=1)


class RecurrentPool(nn.Module):
    """One-layer LSTM / GRU over frame features, outputs averaged over T: ``(B, T, C) -> (B, hidden)``."""

    def __init__(self, in_channels: int = 2048, hidden_dim: int = 512, cell: str = "gru") -> None:
        super().__init__()
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if rnn_cls is None:
            raise ValueError(f"RecurrentPool cell={cell!r}; valid: 'lstm', 'gru'")
        self.in_channels = in_channels
        self.out_channels = hidden_dim
        self.rnn = rnn_cls(in_channels, hidden_dim, num_layers=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return out.mean(dim=1)
