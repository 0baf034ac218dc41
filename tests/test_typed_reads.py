"""Readers below the command line read the typed config's declared fields,
never probe an object for attributes; objects are finished when built."""
from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import pytest

from helpers import compose_cfg
from trainer.core import config
from trainer.report import hparams
from trainer.runs.job import Job, Outcome


# ------------------------------------------------------------ hparams.of
@pytest.mark.parametrize("overrides, shown", [
    ([], {"model.dropout": 0.0, "model.hidden": "[512, 512]", "optimizer.weight_decay": 0.0,
          "optimizer.momentum": 0.0, "loss.label_smoothing": 0.0}),
    (["model=conv", "optimizer=adam"], {"model.dropout": 0.0, "model.channels": "[32, 32, 64, 64]",
                                        "optimizer.weight_decay": 0.0, "loss.label_smoothing": 0.0}),
    (["model=torchvision", "loss=nll", "optimizer=adadelta"], {"optimizer.weight_decay": 0.0}),
])
def test_a_sessions_group_keys_are_the_fields_the_chosen_dataclass_declares(overrides, shown):
    hp = hparams.of(compose_cfg(overrides), {})
    assert {k: v for k, v in hp.items() if "." in k} == shown


def test_an_attribute_that_is_no_field_of_the_group_is_not_read():
    cfg = compose_cfg(["model=conv"])
    vars(cfg.model)["hidden"] = [7]  # patched onto the object, not declared by ConvConfig
    assert "model.hidden" not in hparams.of(cfg, {})


def test_an_untyped_stand_in_for_the_config_is_refused_not_probed():
    cfg = compose_cfg([])
    untyped = dataclasses.replace(cfg, model=types.SimpleNamespace(**dataclasses.asdict(cfg.model)))
    with pytest.raises(TypeError):
        hparams.of(untyped, {})


# -------------------------------------------------------- config.check_applies
# (each rule against its own override: tests/test_values_paths.py IGNORED)
def test_a_rule_for_a_key_the_chosen_dataclass_does_not_declare_is_skipped():
    cfg = compose_cfg(["model=torchvision"])
    vars(cfg.model)["dropout"] = 0.5  # no field of TorchvisionConfig: nothing to refuse
    config.check_applies(cfg)


def test_fields_of_is_one_level_of_declared_fields():
    cfg = compose_cfg(["optimizer=adam"])
    assert set(config.fields_of(cfg.optimizer)) == {f.name for f in dataclasses.fields(config.AdamConfig)}
    assert config.fields_of(cfg)["optimizer"] is cfg.optimizer


# ------------------------------------------------------------ finished objects
@pytest.mark.parametrize("make, attribute", [
    (lambda: Job(run_dir=Path("x")), "epoch_end"),
    (lambda: Outcome("completed", None, 0.5, Path("x")), "status"),
])
def test_a_job_and_its_outcome_take_nothing_patched_in_after_they_are_built(make, attribute):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(make(), attribute, None)


def test_a_jobs_epoch_end_is_given_when_it_is_built():
    report = object()
    assert Job(run_dir=Path("x"), epoch_end=report).epoch_end is report
