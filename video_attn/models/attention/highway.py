"""Highway gating of a residual connection (Srivastava et al., "Training Very Deep Networks", NeurIPS 2015,
arXiv 1507.06228)."""

from __future__ import annotations

import torch
from torch import nn

from .probe import AttentionProbe


class Highway(nn.Module):
    """Replaces ``branch + identity`` in a residual block by the highway mix of the two.

    Srivastava et al., highway layer with the carry gate coupled as ``C = 1 - T``:
    ``y = H(x) * T(x) + x * (1 - T(x))`` with transform gate ``T(x) = sigmoid(W_T x + b_T)``.
    Here ``H(x)`` is the residual branch output and ``x`` the identity (shortcut) path; ``T`` is a 1x1
    conv on the identity, i.e. one gate value per channel and pixel.
    ``b_T`` starts negative (``gate_bias = -2``, the paper suggests -1 to -3) so the block starts by carrying
    its input: with the default zero-initialised ``W_T`` every gate is exactly ``sigmoid(gate_bias)`` at
    init (0.119), and ``W_T`` still learns (its gradient carries the factor ``(H(x) - x) x``).
    ``zero_init=False`` uses ``nn.Conv2d``'s default init for ``W_T`` instead.

    Unlike the standard residual add (``y = H + x``), the output is a convex mix of the two paths;
    the block's final ReLU still follows. Shapes: ``forward(branch, identity)``, both (B, C, H, W) ->
    (B, C, H, W). Works with channels_last, bf16 autocast and ``torch.compile``.
    Probe (:mod:`.probe`): ``probe`` carries the transform gate ``T`` (B, C, H, W), the weight of the branch
    against the identity, kind ``branch``.
    """

    def __init__(
        self,
        channels: int,
        gate_bias: float = -2.0,
        zero_init: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, kernel_size=1, bias=True, device=device, dtype=dtype)
        self.gate_bias = gate_bias
        self.zero_init = zero_init
        self.probe = AttentionProbe("branch")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.zero_init:
            nn.init.zeros_(self.gate.weight)
        else:
            self.gate.reset_parameters()
        nn.init.constant_(self.gate.bias, self.gate_bias)

    def transform_gate(self, identity: torch.Tensor) -> torch.Tensor:
        """``T(x)`` of shape (B, C, H, W), values in (0, 1)."""
        return torch.sigmoid(self.gate(identity))

    def forward(self, branch: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        t = self.probe(self.transform_gate(identity))
        return identity + t * (branch - identity)
