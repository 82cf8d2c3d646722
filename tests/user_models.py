"""A researcher's own code, as `kb import module:user_models:FACTORY` finds it (tests put this folder on sys.path)."""

from __future__ import annotations

from torch import nn


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return x + self.bn(self.conv(x)).relu()


class FourChannelNet(nn.Module):
    """Takes 4 input channels (RGB + depth, say): the input shape is read from the first convolution."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(4, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.stages = nn.Sequential(Block(8), Block(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stages(self.act(self.stem(x)))
        return self.head(self.pool(x).flatten(1))


def four_channel_net() -> nn.Module:
    return FourChannelNet()


def not_a_model() -> int:
    return 7
