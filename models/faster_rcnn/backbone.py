"""Backbones: a small CNN of this package (stride 8) or a torchvision ResNet up to layer3 (stride 16)."""

from __future__ import annotations

from torch import Tensor, nn


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Sequential):
    """Eight 3x3 conv + BN + ReLU layers in three stages (width, 2 x width, 4 x width channels), stride 8.

    The last layer is dilated so the receptive field (91 pixels) covers the largest synthetic objects.
    """

    def __init__(self, width: int = 32) -> None:
        w1, w2, w3 = width, 2 * width, 4 * width
        super().__init__(
            _conv_bn(3, w1, stride=2),
            _conv_bn(w1, w1),
            _conv_bn(w1, w2, stride=2),
            _conv_bn(w2, w2),
            _conv_bn(w2, w3, stride=2),
            _conv_bn(w3, w3),
            _conv_bn(w3, w3),
            _conv_bn(w3, w3, dilation=2),
        )
        self.out_channels = w3
        self.stride = 8
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ResNetBackbone(nn.Module):
    """A torchvision ResNet (weights=None) from its stem to layer3: stride 16."""

    def __init__(self, name: str) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
        self.out_channels = 1024 if name == "resnet50" else 256  # layer3's output (bottleneck or basic blocks)
        self.stride = 16

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def build_backbone(name: str, width: int = 32) -> nn.Module:
    if name == "small":
        return SmallBackbone(width)
    if name in ("resnet18", "resnet34", "resnet50"):
        return ResNetBackbone(name)
    raise ValueError(f"unknown backbone {name!r}")


__all__ = ["SmallBackbone", "ResNetBackbone", "build_backbone"]
