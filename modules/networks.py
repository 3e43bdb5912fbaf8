"""The paper's networks as plain ``nn.Module`` factories, for any input channels, size and classes.

Every factory takes ``in_channels`` (1 or 3), ``image_size`` (28 or 32, any square size that the
pooling allows) and ``num_classes``. They build dense networks; ``lightning_fed.nn.variational``
turns them variational.
"""

from collections.abc import Callable

import torch
from torch import nn

from lightning_fed.nn import LSTM
from lightning_fed.nn.recurrent import NOISE
from modules.catalog import TEXT_NETWORKS


def _pooled(size: int, times: int, kernel: int = 2, stride: int = 2, padding: int = 0) -> int:
    for _ in range(times):
        size = (size + 2 * padding - kernel) // stride + 1
    return size


def cifarnet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
    """CifarNet: conv5x5x64, pool, conv5x5x64, pool, fc384, fc192, fc (about 1.3 M on 28x28).

    Example::

        >>> net = cifarnet()
        >>> sum(p.numel() for p in net.parameters())
        1384586
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    side = _pooled(image_size, 2, kernel=3, stride=2, padding=1)
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(64, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(64 * side * side, 384),
        nn.ReLU(),
        nn.Linear(384, 192),
        nn.ReLU(),
        nn.Linear(192, num_classes),
    )


def lenet5(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
    """LeNet-5 as in Caffe: conv5x5x20, pool, conv5x5x50, pool, fc500, fc (431 k on 28x28).

    Example::

        >>> sum(p.numel() for p in lenet5().parameters())
        431080
    """
    side = _pooled(_pooled(image_size - 4, 1) - 4, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, 20, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * side * side, 500),
        nn.ReLU(),
        nn.Linear(500, num_classes),
    )


def lenet300_100(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
    """LeNet-300-100: fully connected 300, 100, classes (266 k on 28x28).

    Example::

        >>> sum(p.numel() for p in lenet300_100().parameters())
        266610
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )


def resnet18(
    in_channels: int = 3, image_size: int = 32, num_classes: int = 10, pretrained: bool = False
) -> nn.Module:
    """torchvision's ResNet-18 for small inputs: 3x3 stem, no max-pool (about 11.2 M).

    With ``pretrained=True`` the ImageNet weights are downloaded (internet needed) and the 7x7
    stem is kept, so the weights carry over; for 1-channel inputs its filters are summed over
    the colour channels.
    """
    from torchvision.models import ResNet18_Weights
    from torchvision.models import resnet18 as torchvision_resnet18

    net = torchvision_resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
    if pretrained:
        if in_channels != 3:
            stem = net.conv1
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            with torch.no_grad():
                net.conv1.weight.copy_(stem.weight.sum(dim=1, keepdim=True).expand_as(net.conv1.weight))
    else:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg_like(in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> nn.Module:
    """VGG-like: VGG-16's 13 convolutions with batch norm, then fc512 and fc (Zagoruyko's CIFAR net).

    Pools that would shrink the feature map below 1x1 (28x28 inputs) are left out.

    Example::

        >>> vgg_like(1, 28)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    layers: list[nn.Module] = []
    channels, side = in_channels, image_size
    for item in VGG16_CHANNELS:
        if item == "M":
            if side >= 2:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            continue
        layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
        channels = item
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(512, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    ]
    return nn.Sequential(*layers)


class CharLSTM(nn.Module):
    """Next-character prediction: an embedding, a stacked :class:`~lightning_fed.nn.LSTM` and a
    linear head on the last time step's output, logits over ``vocabulary`` characters (LEAF's and
    the FedAvg paper's model: 8-dimensional embedding, two layers of 256). ``variational()`` makes
    every part of it sparse variational.

    Example::

        >>> model = CharLSTM(vocabulary=81, embedding=8, hidden=16, layers=2)
        >>> model(torch.zeros(4, 80, dtype=torch.int64)).shape
        torch.Size([4, 81])
    """

    def __init__(
        self, vocabulary: int, embedding: int = 8, hidden: int = 256, layers: int = 2, noise: str = "batch"
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, embedding)
        self.lstm = LSTM(embedding, hidden, layers, noise=noise)  # noise: what one weight draw serves
        self.head = nn.Linear(hidden, vocabulary)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.head(out[:, -1])


def char_lstm(in_channels: int, image_size: int, num_classes: int, noise: str = "batch") -> CharLSTM:
    """The FedAvg paper's character model: embedding 8, two LSTM layers of 256."""
    return CharLSTM(num_classes, 8, 256, 2, noise=noise)


def char_lstm_small(in_channels: int, image_size: int, num_classes: int, noise: str = "batch") -> CharLSTM:
    """A character model for a CPU: embedding 8, one LSTM layer of 128."""
    return CharLSTM(num_classes, 8, 128, 1, noise=noise)


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "char_lstm": char_lstm,
    "char_lstm_small": char_lstm_small,
    "cifarnet": cifarnet,
    "lenet5": lenet5,
    "lenet300_100": lenet300_100,
    "resnet18": resnet18,
    "vgg_like": vgg_like,
}


def build_network(
    name: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    pretrained: bool = False,
    recurrent_noise: str = "batch",
) -> nn.Module:
    """Build a network by name; ``pretrained`` is only for ``resnet18``, ``recurrent_noise`` (what
    one draw of a variational LSTM's weights serves in training: ``"batch"`` or ``"sequence"``,
    :mod:`lightning_fed.nn.recurrent`) only for the character models.

    Example::

        >>> build_network("lenet300_100", 1, 28, 10)[1]
        Linear(in_features=784, out_features=300, bias=True)
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    if pretrained and name != "resnet18":
        raise ValueError(f"pretrained weights exist only for 'resnet18', not for {name!r}")
    if recurrent_noise not in NOISE:
        raise ValueError(f"recurrent_noise must be one of {', '.join(NOISE)}, got {recurrent_noise!r}")
    if recurrent_noise != "batch" and name not in TEXT_NETWORKS:
        raise ValueError(
            f"recurrent_noise={recurrent_noise!r} applies to the recurrent networks "
            f"({', '.join(TEXT_NETWORKS)}), not to {name!r}"
        )
    if name == "resnet18":
        return resnet18(in_channels, image_size, num_classes, pretrained=pretrained)
    if name in TEXT_NETWORKS:
        return NETWORKS[name](in_channels, image_size, num_classes, noise=recurrent_noise)
    return NETWORKS[name](in_channels, image_size, num_classes)
