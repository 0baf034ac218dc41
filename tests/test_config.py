"""Every config group composes, validates and instantiates; every model, loss
and optimizer trains a step."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from helpers import compose_cfg
from trainer.errors import UserError
from trainer.validate import validate

CONF = Path(__file__).resolve().parents[1] / "trainer" / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_is_the_quickstart():
    cfg = compose_cfg([])
    assert cfg.data.name == "fashion_mnist"
    assert cfg.model._target_ == "trainer.models.MLP" and list(cfg.model.hidden) == [512, 512]
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 1e-3
    assert (cfg.batch_size, cfg.epochs, cfg.train.shuffle, cfg.scheduler.name) == (64, 5, False, "none")
    assert cfg.transform.mean is None and cfg.transform.scale


def test_quickstart_experiment_equals_defaults():
    assert compose_cfg(["experiment=quickstart"]) == compose_cfg([])


def test_group_overrides_change_exactly_those_choices():
    base, cfg = compose_cfg([]), compose_cfg(["model=conv", "optimizer=adam", "lr=1e-3"])
    assert cfg.model._target_ == "trainer.models.ConvNet"
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    for key in ("data", "transform", "loss", "scheduler", "epochs", "batch_size", "seed"):
        assert cfg[key] == base[key]


@pytest.mark.parametrize("group", ["data", "transform", "model", "loss", "optimizer", "scheduler", "experiment"])
def test_every_option_composes_and_validates(group):
    for name in options(group):
        if group == "loss" and name in ("hinge_embedding", "triplet_margin"):
            continue
        cfg = compose_cfg([f"{group}={name}"])
        validate(cfg)


@pytest.mark.parametrize("name", options("model"))
def test_models_train_a_step(name):
    cfg = compose_cfg([f"model={name}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    assert model(x).shape == (16, 10)
    _assert_lowers_loss(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.05), x, y)


@pytest.mark.parametrize("name", [n for n in options("loss") if n not in ("hinge_embedding", "triplet_margin")])
def test_losses_train_a_step(name):
    loss = instantiate(compose_cfg([f"loss={name}"]).loss)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x, y = torch.rand(32, 1, 28, 28), torch.arange(32) % 10
    value = loss(model(x), y)
    assert value.ndim == 0 and torch.isfinite(value)
    _assert_lowers_loss(model, loss, torch.optim.SGD(model.parameters(), lr=0.02), x, y)


@pytest.mark.parametrize("name", ["hinge_embedding", "triplet_margin"])
def test_pairwise_losses_refuse_with_a_reason(name):
    from trainer.cli import build

    with pytest.raises(UserError, match=rf"loss={name} needs .*(pairs|triplets)"):
        build(compose_cfg([f"loss={name}"]).loss, "loss")


@pytest.mark.parametrize("name", options("optimizer"))
def test_optimizers_train_a_step(name):
    lr = 1.0 if name == "adadelta" else 0.05 if name == "sgd" else 1e-3
    cfg = compose_cfg([f"optimizer={name}", f"lr={lr}"])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    opt = instantiate(cfg.optimizer, params=model.parameters())
    assert opt.param_groups[0]["lr"] == lr
    x, y = torch.rand(32, 1, 28, 28), torch.arange(32) % 10
    _assert_lowers_loss(model, torch.nn.CrossEntropyLoss(), opt, x, y)


def _assert_lowers_loss(model, loss_fn, opt, x, y, steps=5):
    first = loss_fn(model(x), y).item()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    assert loss_fn(model(x), y).item() < first


@pytest.mark.parametrize("override,key", [
    ("lr=-1", "lr"), ("batch_size=0", "batch_size"), ("epochs=-1", "epochs"),
    ("model.dropout=1.5", "model.dropout"), ("model.hidden=[512,0]", "model.hidden"),
    ("device=cuda:7", "device"), ("device=tpu", "device"), ("data.val_split=60000", "data.val_split"),
    ("transform.erase=2", "transform.erase"), ("train.nan_policy=ignore", "train.nan_policy"),
    ("early_stopping.monitor=val/f1", "early_stopping.monitor"), ("precision=fp8", "precision"),
])
def test_validation_names_the_key(override, key):
    if override.startswith("device=cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(UserError) as e:
        validate(compose_cfg([override]))
    assert str(e.value).startswith(key) or f" {key}" in str(e.value) or key in str(e.value)
    assert "\n" not in str(e.value)


def test_conv_stack_that_shrinks_to_nothing_is_refused():
    with pytest.raises(UserError, match="model.channels"):
        validate(compose_cfg(["model=conv", "model.channels=[8,8,8,8,8,8]", "model.pool_every=1"]))


def test_monitor_falls_back_to_test_without_val_split():
    assert validate(compose_cfg([])).monitor == "test/acc"
    assert validate(compose_cfg(["data.val_split=0.1"])).monitor == "val/acc"
