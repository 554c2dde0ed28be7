"""Behaviour of lambdatrain.training.model: shapes, width scaling, seeding, errors and pretrained weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from lambdatrain.training.batches import to_tensor_batch
from lambdatrain.protocol.errors import InvalidEvent
from lambdatrain.training.model import MODELS, ModelSpec, build_model, input_size
from tests.datagen import make_image_arrays


def _build(seed: int = 0, **spec) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec(**spec))


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, width", [("vgg19", 0.0625), ("vgg19_cifar", 0.0625), ("vgg11_cifar", 0.125)])
def test_each_model_maps_a_batch_at_its_input_size_to_class_logits(name, width):
    model = _build(name=name, width=width, num_classes=7).eval()
    side = input_size(name)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, side, side))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()


def test_input_sizes_are_the_papers_and_cifars():
    assert {name: input_size(name) for name in MODELS} == {"vgg19": 224, "vgg19_cifar": 32, "vgg11_cifar": 32}


def test_full_width_vgg19_is_torchvisions_vgg19_tensor_for_tensor():
    with torch.device("meta"):  # shapes only: no memory, no init
        reference = torchvision.models.vgg19()
    model = _build(name="vgg19", num_classes=1000)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert _parameters(model) == 143_667_240  # the paper's "144M"


@pytest.mark.parametrize("batch_norm", [False, True])
def test_our_vgg_computes_what_torchvisions_computes_with_the_same_weights(batch_norm):
    from torchvision.models.vgg import VGG as TorchvisionVGG
    from torchvision.models.vgg import cfgs, make_layers as torchvision_layers

    from lambdatrain.training import model as ours

    assert {k: ours.CONFIGS[k] for k in ours.CONFIGS} == {k: cfgs[k] for k in ours.CONFIGS}
    config = [c if c == "M" else max(4, c // 16) for c in cfgs["E"]]
    torch.manual_seed(0)
    classifier = torch.nn.Linear(32 * 7 * 7, 5)
    mine = ours.VGG(ours.make_layers(config, batch_norm), classifier).eval()
    reference = TorchvisionVGG(torchvision_layers(config, batch_norm), num_classes=5, init_weights=False).eval()
    reference.classifier = torch.nn.Linear(32 * 7 * 7, 5)
    reference.load_state_dict(mine.state_dict())  # strict: same names, same shapes
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(mine(x), reference(x))


def test_narrower_width_means_fewer_parameters():
    for name in MODELS:
        counts = [_parameters(_build(name=name, width=w)) for w in (0.0625, 0.125, 0.25)]
        assert counts == sorted(counts) and counts[0] < counts[-1] / 8, name


def test_same_seed_gives_the_same_weights_and_another_seed_does_not():
    first, same, other = (_build(seed, width=0.125).state_dict() for seed in (3, 3, 4))
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_unknown_model_is_an_invalid_model_field():
    with pytest.raises(InvalidEvent) as caught:
        build_model(ModelSpec(name="resnet50"))
    assert caught.value.field == "model" and "vgg19_cifar" in str(caught.value)
    with pytest.raises(InvalidEvent, match="model"):
        input_size("resnet50")


@pytest.mark.parametrize("width", [0.0, -1.0])
def test_non_positive_width_is_an_invalid_width_field(width):
    with pytest.raises(InvalidEvent) as caught:
        build_model(ModelSpec(width=width))
    assert caught.value.field == "width"


@pytest.mark.parametrize("name", ["vgg19_cifar", "vgg19"])
def test_pretrained_state_dict_file_loads_every_weight(tmp_path, name):
    trained = _build(seed=1, name=name, width=0.0625)
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    loaded = _build(seed=2, name=name, width=0.0625, pretrained=str(tmp_path / "weights.pt"))
    expected = trained.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())


def test_pretrained_checkpoint_record_with_other_classes_keeps_features_and_replaces_the_head(tmp_path):
    trained = _build(seed=1, width=0.0625, num_classes=100)
    torch.save({"model": trained.state_dict(), "step": 5}, tmp_path / "checkpoint.pt")
    loaded = _build(seed=2, width=0.0625, num_classes=10, pretrained=str(tmp_path / "checkpoint.pt"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.features.state_dict().values(), trained.features.state_dict().values()))
    assert loaded.classifier.out_features == 10


def test_pretrained_weights_of_another_width_are_refused(tmp_path):
    torch.save(_build(width=0.125).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(InvalidEvent, match="does not fit vgg19_cifar at width 0.0625") as caught:
        _build(width=0.0625, pretrained=str(tmp_path / "wide.pt"))
    assert caught.value.field == "pretrained"
    with pytest.raises(InvalidEvent, match="no such state_dict file"):
        _build(width=0.0625, pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(InvalidEvent, match="only for vgg19 at width 1"):
        _build(width=0.0625, pretrained="imagenet")


def test_tiny_cifar_model_learns_the_synthetic_images():
    x, y = make_image_arrays(40, seed=0)
    inputs, targets = to_tensor_batch(x, (0.5,) * 3, (0.25,) * 3), torch.from_numpy(y)
    model = _build(name="vgg11_cifar", width=0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
