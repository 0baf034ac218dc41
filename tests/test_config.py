"""Every config group composes, validates and instantiates; every model, loss
and optimizer trains a step."""
from __future__ import annotations

from pathlib import Path

import dataclasses
import typing

import pytest
import torch

from helpers import check_before_data, compose_cfg
from trainer.core import config
from trainer.runs import build
from trainer.core.engine import monitored
from trainer.core.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "trainer" / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_is_the_quickstart():
    cfg = compose_cfg([])
    assert cfg.data.name == "fashion_mnist"
    assert cfg.model._target_ == "trainer.core.models.MLP" and list(cfg.model.hidden) == [512, 512]
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.lr == 1e-3
    assert "lr" not in {f.name for f in dataclasses.fields(cfg.optimizer)}  # one lr, at the top level
    assert (cfg.batch_size, cfg.epochs, cfg.train.shuffle, cfg.scheduler.name) == (64, 5, False, "none")
    assert cfg.transform.mean is None and cfg.transform.scale


def test_quickstart_experiment_equals_defaults():
    assert compose_cfg(["experiment=quickstart"]) == compose_cfg([])


def test_group_overrides_change_exactly_those_choices():
    base, cfg = compose_cfg([]), compose_cfg(["model=conv", "optimizer=adam", "lr=1e-3"])
    assert cfg.model._target_ == "trainer.core.models.ConvNet"
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    for key in ("data", "transform", "loss", "scheduler", "epochs", "batch_size", "seed"):
        assert getattr(cfg, key) == getattr(base, key)


@pytest.mark.parametrize("group", ["data", "transform", "model", "loss", "optimizer", "scheduler", "experiment"])
def test_every_option_composes_and_validates(group):
    for name in options(group):
        if group == "loss" and name in ("hinge_embedding", "triplet_margin"):
            continue
        if group == "experiment" and name == "fashion_finetune":
            continue  # pretrained weights from torch's cache: test_vision_models.py gives it a cache of its own
        check_before_data(compose_cfg([f"{group}={name}"]))


@pytest.mark.parametrize("name", options("model"))
def test_models_train_a_step(name):
    model = build.make_model(compose_cfg([f"model={name}"]).model, seed=0)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    assert model(x).shape == (16, 10)
    _assert_lowers_loss(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.05), x, y)


@pytest.mark.parametrize("name", [n for n in options("loss") if n not in ("hinge_embedding", "triplet_margin")])
def test_losses_train_a_step(name):
    loss = build.make_loss(compose_cfg([f"loss={name}"]).loss)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x, y = torch.rand(32, 1, 28, 28), torch.arange(32) % 10
    value = loss(model(x), y)
    assert value.ndim == 0 and torch.isfinite(value)
    _assert_lowers_loss(model, loss, torch.optim.SGD(model.parameters(), lr=0.02), x, y)


@pytest.mark.parametrize("name", ["hinge_embedding", "triplet_margin"])
def test_pairwise_losses_refuse_with_a_reason(name):
    with pytest.raises(UserError, match=rf"loss={name} needs .*(pairs|triplets)"):
        build.make_loss(compose_cfg([f"loss={name}"]).loss)


@pytest.mark.parametrize("name", options("optimizer"))
def test_optimizers_train_a_step(name):
    lr = 1.0 if name == "adadelta" else 0.05 if name == "sgd" else 1e-3
    cfg = compose_cfg([f"optimizer={name}", f"lr={lr}"])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    opt = build.make_optimizer(cfg.optimizer, model, cfg.lr)
    assert opt.param_groups[0]["lr"] == lr
    x, y = torch.rand(32, 1, 28, 28), torch.arange(32) % 10
    _assert_lowers_loss(model, torch.nn.CrossEntropyLoss(), opt, x, y)


# ------------------------------------------------------------ typed groups
GROUP_UNIONS = {"model": config.ModelConfig, "loss": config.LossConfig, "optimizer": config.OptimizerConfig}


def test_each_group_union_holds_exactly_the_groups_schemas():
    hints = typing.get_type_hints(config.TrainerConfig)
    for group, union in GROUP_UNIONS.items():
        assert hints[group] == union
        schemas = {cls for path, cls in config.SCHEMAS.items() if path.startswith(f"{group}/")}
        assert set(typing.get_args(union)) == schemas, group


@pytest.mark.parametrize("group", ["model", "loss", "optimizer"])
def test_every_option_composes_into_its_group_dataclass_and_back_from_a_checkpoint(group):
    for name in options(group):
        cfg = compose_cfg([f"{group}={name}"])
        assert isinstance(getattr(cfg, group), typing.get_args(GROUP_UNIONS[group])), name
        assert config.from_dict(config.as_dict(cfg)) == cfg, name  # what a checkpoint keeps, typed again


# A checkpoint's saved group -> the dataclass and `_target_` it becomes. A checkpoint holds
# every key of its groups; an older one a key since dropped (optimizer.lr) and not those since added.
SAVED_GROUPS = [
    ("model", {"_target_": "trainer.models.MLP", "hidden": [8]}, config.MLPConfig, "trainer.core.models.MLP"),
    ("model", {"_target_": "trainer.models.ConvNet", "channels": [4]}, config.ConvConfig,
     "trainer.core.models.ConvNet"),
    ("loss", {"_target_": "trainer.losses.CrossEntropy", "label_smoothing": 0.1}, config.SmoothedLossConfig,
     "trainer.core.losses.CrossEntropy"),
    ("loss", {"_target_": "trainer.losses.NLL"}, config.PlainLossConfig, "trainer.core.losses.NLL"),
    ("loss", {"_target_": "trainer.losses.MultiMargin", "p": 2}, config.MultiMarginConfig,
     "trainer.core.losses.MultiMargin"),
    ("optimizer", {"_target_": "torch.optim.AdamW", "lr": 0.1, "betas": [0.8, 0.9], "eps": 1e-8, "weight_decay": 0.05,
                   "amsgrad": False}, config.AdamConfig, "torch.optim.AdamW"),
    ("optimizer", {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9}, config.SGDConfig, "torch.optim.SGD"),
    ("transform", {"_target_": "trainer.pipeline.BatchTransform", "shift": 2}, config.TransformConfig,
     "trainer.core.pipeline.BatchTransform"),
]


@pytest.mark.parametrize("group, saved, cls, target", SAVED_GROUPS)
def test_a_saved_group_becomes_its_dataclass_with_moved_targets_upgraded(group, saved, cls, target):
    values = {**config.as_dict(compose_cfg([])), group: saved}
    node = getattr(config.from_dict(values), group)
    assert type(node) is cls and node._target_ == target
    kept = {k: v for k, v in saved.items() if k != "_target_" and k in {f.name for f in dataclasses.fields(cls)}}
    assert {k: getattr(node, k) for k in kept} == kept  # its values; a key the schema dropped (optimizer.lr) is gone


def test_a_saved_config_missing_a_required_value_is_one_line():
    values = config.as_dict(compose_cfg([]))
    del values["data"]["name"]
    with pytest.raises(UserError, match=r"^its saved config has no data\.name; use a checkpoint written by trainer$"):
        config.from_dict(values)


def test_a_group_that_is_not_one_of_its_schemas_is_refused_once_composed():
    composed = dataclasses.replace(compose_cfg([]), model={"_target_": "mine.Net"})
    with pytest.raises(UserError, match=r"^model is not one of the model schemas.*/schema/model/mlp, "
                                        r"/schema/model/conv, /schema/model/torchvision\)$"):
        config.from_composed(composed)


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
    ("device=cuda:7", "device"), ("device=tpu", "device"),
    ("transform.erase=2", "transform.erase"), ("train.nan_policy=ignore", "train.nan_policy"),
    ("early_stopping.monitor=val/f1", "early_stopping.monitor"), ("precision=fp8", "precision"),
    ("optimizer.momentum=-0.5", "optimizer.momentum"), ("model.activation=swish", "model.activation"),
    ("scheduler=onecycle scheduler.pct_start=1", "scheduler.pct_start"), ("lr=1e39", "lr"),
    ("optimizer=adagrad scheduler=onecycle scheduler.cycle_momentum=true", "scheduler.cycle_momentum"),
    ("early_stopping.monitor=val/loss early_stopping.mode=max", "early_stopping.mode"),
    ("early_stopping.monitor=train/acc early_stopping.mode=min", "early_stopping.mode"),
    ("early_stopping.monitor=test/acc data.val_split=100", "early_stopping.monitor"),
    ("early_stopping.monitor=test/loss cv.folds=3", "early_stopping.monitor"),
    ("data.val_split=1.5", "data.val_split"), ("data.val_split=1.0", "data.val_split"),
    ("early_stopping.min_delta=nan", "early_stopping.min_delta"), ("seed=99999999999999999999", "seed"),
    ("model=conv model.padding=-1", "model.padding"), ("model=conv model.channels=[8,8,8,8,8,8] "
                                                       "model.pool_every=1", "model.channels"),
])
def test_validation_names_the_key(override, key):
    if override.startswith("device=cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(UserError) as e:
        check_before_data(compose_cfg(override.split()))
    assert str(e.value).startswith(f"{key}=") or f"{key}=" in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adagrad", "adadelta"])
def test_onecycle_builds_with_every_optimizer_and_keeps_its_momentum(optimizer):
    config = compose_cfg([f"optimizer={optimizer}", "scheduler=onecycle"])
    check_before_data(config)
    parts = build.make_parts(config, torch.device("cpu"), for_graph=False)
    before = {k: v for k, v in parts.optimizer.param_groups[0].items() if k in ("momentum", "betas")}
    scheduler, _ = build.make_scheduler(config, parts.optimizer, steps_per_epoch=10)
    parts.optimizer.step()  # no gradients yet: changes nothing
    scheduler.step()
    assert {k: parts.optimizer.param_groups[0][k] for k in before} == before


@pytest.mark.parametrize("monitor, mode", [("val/loss", "min"), ("test/loss", "min"), ("train/loss", "min"),
                                           ("val/acc", "max"), ("train/acc", "max")])
def test_the_monitor_decides_which_way_is_better(monitor, mode):
    # A loss that falls is an improvement: best.ckpt and early stopping must not keep the worst epoch.
    assert compose_cfg([f"early_stopping.monitor={monitor}"]).early_stopping.mode == mode


def test_monitor_names_what_is_really_watched():
    assert monitored("val/acc", has_val=False) == "test/acc"  # the quickstart evaluates on test every epoch
    assert monitored("val/loss", has_val=True) == "val/loss"
    assert monitored("train/loss", has_val=False) == "train/loss"
