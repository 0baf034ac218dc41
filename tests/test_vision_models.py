"""model=torchvision: torchvision's architectures adapted to 1x28x28 images,
their first weights (a local file, torch's cache, never the network) and
fine-tuning only the head. In-process builds with small inputs; one CLI run
with a small net."""
from __future__ import annotations

import socket

import pytest
import torch
from torchvision import models as tv

from helpers import check_before_data, compose_cfg, run_cli, tiny
from trainer.core.checkpoint import load as load_checkpoint
from trainer.core.config import validate
from trainer.core.errors import UserError
from trainer.runs import build


def model_config(*overrides: str):
    return compose_cfg(["model=torchvision", *overrides])


def make(*overrides: str, seed: int = 0, load_weights: bool = True):
    return build.make_model(model_config(*overrides).model, seed, load_weights)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: pretrained weights come from the cache or not at all."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def torch_home(tmp_path, monkeypatch, no_network):
    """An empty torch cache of its own ($TORCH_HOME)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


# ----------------------------------------------------------- architectures
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "squeezenet1_1"])
def test_architectures_take_one_channel_28px_and_give_the_classes(arch):
    model = make(f"model.arch={arch}")
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_resnet_gets_the_small_image_stem():
    net = make("model.arch=resnet18").net
    assert (net.conv1.in_channels, net.conv1.kernel_size, net.conv1.stride) == (1, (3, 3), (1, 1))
    assert isinstance(net.maxpool, torch.nn.Identity)
    original = make("model.arch=resnet18", "model.small_stem=false").net
    assert (original.conv1.kernel_size, original.conv1.stride) == ((7, 7), (2, 2))


def test_unknown_architecture_is_one_line_listing_the_choices():
    with pytest.raises(UserError, match="model.arch=resnet1 is not valid; choose one of: .*resnet18") as e:
        validate(model_config("model.arch=resnet1"))
    assert "\n" not in str(e.value)


def test_too_small_input_names_the_resize_it_needs():
    with pytest.raises(UserError, match=r"model.arch=vgg11_bn: .*cannot take 28x28 inputs.*set model.resize=32"):
        check_before_data(model_config("model.arch=vgg11_bn"))


def test_resize_makes_a_large_input_net_fit():
    model = make("model.arch=squeezenet1_1", "model.resize=64")
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


# ------------------------------------------------------------------ weights
def test_weights_path_with_a_saved_model_gives_its_exact_starting_weights(tmp_path):
    saved = make("model.arch=resnet18", seed=7)
    torch.save(saved.state_dict(), tmp_path / "start.pth")
    model = make("model.arch=resnet18", f"model.weights_path={tmp_path / 'start.pth'}", seed=0)
    fresh = make("model.arch=resnet18", seed=0)
    for key, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not torch.equal(fresh.net.fc.weight, saved.net.fc.weight)  # the file decided, not the seed


def test_weights_path_with_a_torchvision_file_adapts_it(tmp_path):
    torch.manual_seed(3)
    original = tv.resnet18()
    torch.save(original.state_dict(), tmp_path / "resnet18.pth")
    model = make("model.arch=resnet18", f"model.weights_path={tmp_path / 'resnet18.pth'}")
    assert torch.equal(model.net.layer1[0].conv1.weight, original.layer1[0].conv1.weight)
    assert torch.equal(model.net.bn1.running_var, original.bn1.running_var)
    assert model.net.conv1.weight.shape == (64, 1, 3, 3) and model.net.fc.out_features == 10
    # The RGB filters summed to one channel (then resampled 7x7 -> 3x3 keeping the sum).
    summed = original.conv1.weight.sum((1, 2, 3))
    assert torch.allclose(model.net.conv1.weight.sum((1, 2, 3)), summed, atol=1e-5)
    assert model.input_mean.item() == pytest.approx(0.449, abs=1e-3)  # ImageNet's, averaged over RGB
    assert model.input_std.item() == pytest.approx(0.226, abs=1e-3)


@pytest.mark.parametrize("content, message", [
    (None, "is not a file"),
    (b"not a state dict", "cannot be read as a state dict"),
    ({"conv.weight": torch.zeros(2)}, "does not fit this architecture"),
])
def test_bad_weights_path_is_one_line(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UserError, match=f"model.weights_path={path} {message}"):
        make(f"model.weights_path={path}")


def test_pretrained_without_a_cached_file_names_it_and_never_connects(torch_home):
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(UserError, match="model.pretrained=true: the resnet18 weights are not in torch's cache") as e:
        make("model.pretrained=true")
    assert str(expected) in str(e.value) and "\n" not in str(e.value)


def cache_resnet18(torch_home) -> torch.nn.Module:
    """A stand-in for torchvision's ImageNet ResNet-18, where torch's cache keeps it."""
    torch.manual_seed(5)
    original = tv.resnet18()
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(original.state_dict(), cache / "resnet18-f37072fd.pth")
    return original


def test_pretrained_loads_the_cached_file(torch_home):
    original = cache_resnet18(torch_home)
    model = make("model.pretrained=true")
    assert torch.equal(model.net.layer4[1].conv2.weight, original.layer4[1].conv2.weight)
    assert model.input_mean.item() == pytest.approx(0.449, abs=1e-3)


@pytest.mark.parametrize("preset", ["fashion_resnet18", "fashion_finetune"])
def test_gpu_presets_build(torch_home, preset):
    cache_resnet18(torch_home)
    config = compose_cfg([f"experiment={preset}", "device=cpu"])
    check_before_data(config)
    assert config.model.arch == "resnet18" and config.model.pretrained == (preset == "fashion_finetune")


def test_a_rebuilt_pretrained_model_needs_no_cache(torch_home):
    """trainer-eval and resume rebuild the shapes; the checkpoint brings the weights."""
    model = make("model.pretrained=true", load_weights=False)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_pretrained_refuses_a_second_normalisation():
    with pytest.raises(UserError, match="model.pretrained=true normalises .* set transform.mean=null"):
        validate(model_config("model.pretrained=true", "transform=normalize"))


# ------------------------------------------------------------------ freezing
def test_freeze_trains_only_the_head_and_keeps_batchnorm_statistics():
    config = model_config("model.arch=resnet18", "model.freeze=true")
    model = build.make_model(config.model, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build.make_optimizer(config.optimizer, model, lr=0.1)
    model.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 1, 28, 28)), torch.arange(4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"net.fc.weight", "net.fc.bias"}


def test_unfrozen_trains_the_backbone_too():
    config = model_config("model.arch=resnet18")
    model = build.make_model(config.model, 0)
    conv = model.net.layer1[0].conv1.weight.clone()
    optimizer = build.make_optimizer(config.optimizer, model, lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 1, 28, 28)), torch.arange(4))
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.net.layer1[0].conv1.weight, conv)


# ----------------------------------------------------------------- the CLI
def test_cli_fine_tunes_the_head_from_a_weights_file(synthetic_root, tmp_path):
    start = make("model.arch=mobilenet_v3_small", seed=3)
    torch.save(start.state_dict(), tmp_path / "start.pth")
    proc = run_cli(tiny(synthetic_root, "model=torchvision", "model.arch=mobilenet_v3_small", "model.freeze=true",
                        f"model.weights_path={tmp_path / 'start.pth'}", "data.subset=64", "data.test_subset=64", "optimizer=adam", "lr=1e-2",
                        "tracking.tensorboard=false", "hydra.run.dir=outputs/run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Model: VisionModel, 1,527,818 parameters, 10,250 of them train" in proc.stdout
    trained = load_checkpoint(tmp_path / "outputs" / "run" / "checkpoints" / "last.ckpt")["model"]
    changed = {k for k, v in start.state_dict().items() if not torch.equal(trained[k], v)}
    assert changed == {"net.classifier.3.weight", "net.classifier.3.bias"}
