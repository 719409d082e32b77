"""The small CNN that scores prohibited-item classes, and its conversion to plain arrays.

Conv blocks (conv, batch norm, ReLU) shrink the 96×128 input to 12×16 feature maps; a global
max pool (does the item appear anywhere?) beside a global average pool feeds one linear layer
with a logit per class. For export, each batch norm is folded into its convolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

#: (in, out, kernel, stride, max-pool after) per conv block.
BLOCKS: tuple[tuple[int, int, int, int, bool], ...] = (
    (1, 16, 5, 2, False),  # 96×128 → 48×64
    (16, 32, 3, 2, False),  # → 24×32
    (32, 48, 3, 2, False),  # → 12×16
    (48, 64, 3, 1, False),  # → 12×16
)


class XrayNet(nn.Module):
    """Input (N, C, 96, 128) standardised log transmission; output (N, K) logits."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (c_in, c_out, k, stride, pool) in enumerate(BLOCKS):
            c_in = channels if i == 0 else c_in
            layers += [
                nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if pool:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * BLOCKS[-1][1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1)
        out: torch.Tensor = self.head(pooled)
        return out


@dataclass(frozen=True, slots=True)
class ConvLayer:
    """A convolution with batch norm folded in, ready for ONNX."""

    weight: npt.NDArray[np.float32]  # (out, in, k, k)
    bias: npt.NDArray[np.float32]
    stride: int
    pool: bool


@dataclass(frozen=True, slots=True)
class FoldedNet:
    convs: tuple[ConvLayer, ...]
    head_weight: npt.NDArray[np.float32]  # (K, features)
    head_bias: npt.NDArray[np.float32]


def fold(net: XrayNet) -> FoldedNet:
    """The trained net as arrays, each batch norm folded into the convolution before it."""
    net = net.eval()
    convs: list[ConvLayer] = []
    mods = list(net.features)
    i = 0
    block = 0
    while i < len(mods):
        conv, bn = mods[i], mods[i + 1]
        assert isinstance(conv, nn.Conv2d)
        assert isinstance(bn, nn.BatchNorm2d)
        assert bn.running_var is not None
        assert bn.running_mean is not None
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        w = conv.weight.detach() * scale[:, None, None, None]
        b = (bn.bias - bn.running_mean * scale).detach()
        pool = BLOCKS[block][4]
        convs.append(
            ConvLayer(
                w.numpy().astype(np.float32),
                b.numpy().astype(np.float32),
                BLOCKS[block][3],
                pool,
            )
        )
        i += 4 if pool else 3
        block += 1
    return FoldedNet(
        tuple(convs),
        net.head.weight.detach().numpy().astype(np.float32),
        net.head.bias.detach().numpy().astype(np.float32),
    )
