"""Global self-attention (Shen et al., "Global Self-Attention Networks for Image Recognition",
arXiv 2010.03019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .probe import AttentionProbe


class GlobalSelfAttention(nn.Module):
    """GSA module: replaces a block's 3x3 conv with content attention + axial positional attention.

    Shen et al. section 3. Queries, keys, values are 1x1 convs (no bias) split into ``heads`` heads with
    ``dim_key`` (queries / keys) and ``out_channels / heads`` (values) channels per head.

    - Content branch: keys softmax-normalised over the ``H*W`` positions,
      ``context = softmax(K) V^T`` (dim_key x dim_value per head), ``F_c = context^T Q``. Linear in ``H*W``.
    - Positional branch: axial relative attention without softmax, first along columns
      ``C[a, b] = sum_i (q[a, b] . r^col_{i-a}) v[i, b]``, then along rows on that output
      ``F_p[a, b] = sum_j (q[a, b] . r^row_{j-b}) C[a, j]``, with learned relative embeddings of
      ``dim_key`` channels shared by the heads (init normal, std ``dim_key ** -0.5``).
    - Output ``F_c + F_p`` (B, out_channels, H, W); a stride > 1 is applied afterwards by average pooling
      (the paper's rule), with ``ceil_mode`` so the size matches a strided 3x3 conv / 1x1 shortcut.

    The relative embeddings cover offsets up to ``max_size - 1``: inputs taller or wider than ``max_size``
    raise a ValueError (raise ``max_size`` for such inputs; at 224 px a ResNet's layer1 map is 56).
    ``kernel_size`` and ``dilation`` of the replaced conv are accepted and unused (the module is global);
    grouped convs have no GSA counterpart, so ``groups != 1`` is an error.
    ``includes_norm_act = False`` (the block's BN follows). Works with channels_last, bf16 autocast and
    ``torch.compile``.
    Probe (:mod:`.probe`): ``probe`` carries the content branch's key attention ``softmax(K)`` over the
    positions as maps (B, heads * dim_key, H, W) (each map sums to 1; head-major), kind ``spatial``.

    Args:
        heads: number of heads (8 in the paper); must divide ``out_channels``.
        dim_key: query / key channels per head; default ``out_channels // heads``.
        max_size: largest input height / width the positional embeddings support (64).
        positional: include the positional branch (False: content-only ablation of the paper).
    """

    includes_norm_act = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        heads: int = 8,
        dim_key: int | None = None,
        max_size: int = 64,
        positional: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if groups != 1:
            raise ValueError(f"GlobalSelfAttention has no grouped form (groups={groups}); use heads instead")
        if heads < 1 or out_channels % heads:
            raise ValueError(f"GlobalSelfAttention heads ({heads}) must divide out_channels ({out_channels})")
        if max_size < 1:
            raise ValueError(f"GlobalSelfAttention max_size must be >= 1, got {max_size}")
        self.out_channels = out_channels
        self.heads = heads
        self.dim_value = out_channels // heads
        self.dim_key = dim_key if dim_key is not None else self.dim_value
        self.max_size = max_size
        self.stride = stride
        self.qkv = nn.Conv2d(in_channels, heads * (2 * self.dim_key + self.dim_value), 1, bias=False, **dd)
        self.probe = AttentionProbe("spatial")
        if positional:
            num_offsets = 2 * max_size - 1
            self.rel_col = nn.Parameter(torch.randn(num_offsets, self.dim_key, **dd) * self.dim_key**-0.5)
            self.rel_row = nn.Parameter(torch.randn(num_offsets, self.dim_key, **dd) * self.dim_key**-0.5)
        else:
            self.register_parameter("rel_col", None)
            self.register_parameter("rel_row", None)

    def _relative(self, table: torch.Tensor, size: int) -> torch.Tensor:
        """(size, size, dim_key) embeddings ``r[a, i] = table[i - a + max_size - 1]``."""
        pos = torch.arange(size, device=table.device)
        return table[pos[None, :] - pos[:, None] + self.max_size - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if h > self.max_size or w > self.max_size:
            raise ValueError(
                f"GlobalSelfAttention input {h}x{w} exceeds max_size={self.max_size}; "
                "build it with a larger max_size (config key model.backbone.conv_kwargs.max_size)"
            )
        nh, dk, dv = self.heads, self.dim_key, self.dim_value
        q, k, v = self.qkv(x).reshape(b, nh, 2 * dk + dv, h, w).split([dk, dk, dv], dim=2)

        k = torch.softmax(k.reshape(b, nh * dk, h * w), dim=-1)
        k = self.probe(k.reshape(b, nh * dk, h, w)).reshape(b, nh, dk, h * w)  # the probe sees maps
        context = torch.einsum("bndp,bnep->bnde", k, v.reshape(b, nh, dv, h * w))
        out = torch.einsum("bnde,bndp->bnep", context, q.reshape(b, nh, dk, h * w)).reshape(b, nh, dv, h, w)

        if self.rel_col is not None:
            r_col = self._relative(self.rel_col, h).to(q.dtype)
            r_row = self._relative(self.rel_row, w).to(q.dtype)
            col_logits = torch.einsum("bndxy,xid->bnxyi", q, r_col)
            col_out = torch.einsum("bnxyi,bneiy->bnexy", col_logits, v)
            row_logits = torch.einsum("bndxy,yjd->bnxyj", q, r_row)
            out = out + torch.einsum("bnxyj,bnexj->bnexy", row_logits, col_out)

        out = out.reshape(b, self.out_channels, h, w)
        if self.stride > 1:
            out = F.avg_pool2d(out, self.stride, self.stride, ceil_mode=True)
        return out
