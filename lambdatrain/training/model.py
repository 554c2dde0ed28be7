"""The models: VGG networks (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", arXiv:1409.1556), defined as torchvision defines them.

* ``vgg19``: the paper's configuration E as torchvision.models.vgg builds it: 224x224 input,
  no batch norm, classifier 4096-4096-num_classes.
* ``vgg19_cifar`` / ``vgg11_cifar``: the common CIFAR adaptation of configurations E / A: 32x32
  input, batch norm after every conv, and after five max-pools (1x1 map) one linear layer.

``width`` scales every conv's channels and the hidden linear units, so tests and CPU demos can run
the same architecture small. Weights are initialized as torchvision initializes VGG (Kaiming-normal
convs, N(0, 0.01) linears); the caller seeds torch, so one seed gives one set of weights.

Why not import torchvision's classes: importing torchvision costs a cold start 2-3 s more (it
pulls in torch._dynamo), and every Lambda sandbox pays it. The few lines below build the same
modules under the same names, so state_dicts are interchangeable with torchvision's (tests check
this tensor for tensor); torchvision is imported only for its ImageNet weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from lambdatrain.protocol.errors import InvalidEvent


@dataclass(frozen=True)
class ModelSpec:
    """What to build; stored with every checkpoint so a run describes itself."""

    name: str = "vgg19_cifar"  # a key of MODELS
    width: float = 1.0  # multiplies every layer's channels / hidden units (min 4); 1.0 is the paper's
    num_classes: int = 10
    pretrained: str | None = None  # a state_dict file, or "imagenet" (torchvision's weights; vgg19 only)


@dataclass(frozen=True)
class Architecture:
    """How one entry of MODELS is built."""

    build: Callable[[ModelSpec, list], nn.Module]  # (spec, scaled conv config) -> fresh module
    config: str  # key of CONFIGS: "A" is VGG11, "E" is VGG19
    input_size: int  # side of the square input images, in pixels
    head: str  # state_dict prefix of the last linear layer, replaced when num_classes differ


# torchvision.models.vgg.cfgs: conv output channels, "M" a 2x2 max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # VGG11
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],  # VGG19
}


def make_layers(config: list, batch_norm: bool) -> nn.Sequential:
    """torchvision.models.vgg.make_layers: the feature extractor (same layer order, same names)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """torchvision.models.vgg.VGG's module tree (features, avgpool, classifier) for 224x224 input."""

    def __init__(self, features: nn.Module, classifier: nn.Module):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class CifarVGG(nn.Module):
    """VGG features with batch norm and a single linear classifier, for 32x32 inputs."""

    def __init__(self, features: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.features = features
        # After five 2x2 max-pools a 32x32 input is 1x1 already; pooling lets other sizes run too.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _scaled(units: int, width: float) -> int:
    return max(4, round(units * width))


def _build_cifar(spec: ModelSpec, config: list) -> nn.Module:
    channels = [c for c in config if c != "M"][-1]
    return CifarVGG(make_layers(config, batch_norm=True), channels, spec.num_classes)


def _build_imagenet(spec: ModelSpec, config: list) -> nn.Module:
    channels = [c for c in config if c != "M"][-1]
    hidden = _scaled(4096, spec.width)
    # Built on the meta device, then given storage once: _init_like_torchvision writes every
    # tensor, so nothing is initialized twice (the full classifier alone is 400 MB).
    with torch.device("meta"):
        classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(hidden, spec.num_classes),
        )
        model = VGG(make_layers(config, batch_norm=False), classifier)
    return model.to_empty(device="cpu")


MODELS: dict[str, Architecture] = {
    "vgg19": Architecture(_build_imagenet, "E", 224, "classifier.6"),
    "vgg19_cifar": Architecture(_build_cifar, "E", 32, "classifier"),
    "vgg11_cifar": Architecture(_build_cifar, "A", 32, "classifier"),
}


def _architecture(name: str) -> Architecture:
    if name not in MODELS:
        raise InvalidEvent("model", f"unknown model '{name}'; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]


def input_size(name: str) -> int:
    """Side in pixels of the square images the model ``name`` takes."""
    return _architecture(name).input_size


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialized (or pretrained) model; seed torch first for reproducible weights."""
    arch = _architecture(spec.name)
    if not spec.width > 0:
        raise InvalidEvent("width", f"must be positive, got {spec.width}")
    if spec.num_classes < 1:
        raise InvalidEvent("num_classes", f"must be at least 1, got {spec.num_classes}")
    config = [c if c == "M" else _scaled(c, spec.width) for c in CONFIGS[arch.config]]
    model = arch.build(spec, config)
    _init_like_torchvision(model)
    if spec.pretrained is not None:
        _load_pretrained(model, spec, arch.head)
    return model


def _init_like_torchvision(model: nn.Module) -> None:
    """torchvision.models.vgg.VGG's initialization, applied to any of our variants."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
            module.reset_running_stats()
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.constant_(module.bias, 0)


def _load_pretrained(model: nn.Module, spec: ModelSpec, head: str) -> None:
    if spec.pretrained == "imagenet":
        state = _imagenet_state(spec)
    else:
        path = Path(spec.pretrained or "")
        if not path.is_file():
            raise InvalidEvent("pretrained", f"no such state_dict file: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise InvalidEvent("pretrained", f"cannot load {path}: {' '.join(str(exc).split())[:200]}") from exc
        # A checkpoint record ({"model": state_dict, "optimizer": ...}) works as well as a bare state_dict.
        if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
            state = state["model"]
    if not isinstance(state, Mapping):
        raise InvalidEvent("pretrained", f"{spec.pretrained} holds a {type(state).__name__}, not a state_dict")
    _load_state(model, dict(state), head, spec)


def _imagenet_state(spec: ModelSpec) -> Mapping[str, torch.Tensor]:
    if spec.name != "vgg19" or spec.width != 1.0:
        raise InvalidEvent("pretrained", f"ImageNet weights exist only for vgg19 at width 1, not {spec.name} at width {spec.width}")
    from torchvision.models import VGG19_Weights

    try:
        return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except OSError as exc:  # urllib's errors, offline included
        raise InvalidEvent("pretrained", f"cannot download torchvision's ImageNet VGG19 weights ({exc}); pass a state_dict file") from exc


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], head: str, spec: ModelSpec) -> None:
    """Load every tensor strictly, except the head, which is kept fresh when its shape differs."""
    own = model.state_dict()
    head_keys = {k for k in own if k.startswith(head + ".")}
    if any(k in state and getattr(state[k], "shape", None) != own[k].shape for k in head_keys):
        state = {k: v for k, v in state.items() if k not in head_keys}
    missing = sorted(set(own) - set(state) - head_keys)
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if getattr(state[k], "shape", None) != own[k].shape)
    if missing or unexpected or mismatched:
        detail = f"missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {mismatched[:3]}"
        raise InvalidEvent("pretrained", f"{spec.pretrained} does not fit {spec.name} at width {spec.width}: {detail}")
    model.load_state_dict(state, strict=False)
