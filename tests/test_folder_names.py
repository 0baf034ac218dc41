"""Run, sweep and job folders are named by what varies first, then the date
and a random suffix: TensorBoard names each run by its folder under --logdir
and shows only the first 14-17 characters of it (the HParams Trial ID column,
an image card's run label). trainer.sweeps.plan and trainer.report.hparams,
in-process."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainer.cli import api
from trainer.report.hparams import trial_id
from trainer.runs.resume import quoted_folder
from trainer.sweeps.callback import swept_keys
from trainer.sweeps.plan import job_dir_name, job_number, planned_job_name, run_dir_name, sweep_dir_name

STAMP, UNIQUE = "2026-12-05_11-02-56", "3831f0"


@pytest.mark.parametrize("overrides, lead", [
    (["model=conv"], "model=conv"),
    (["model=conv", "optimizer=adam"], "model=conv,optimizer=adam"),                    # as typed
    (["data.subset=500", "model=conv"], "data.subset=500,model=conv"),                  # as typed, not sorted
    (["lr=0.0030000001"], "lr=0.003"),                                                  # numbers rounded
    (["lr=0.1", "lr=0.01"], "lr=0.01"),                                                 # the value Hydra applied
    ([], "defaults"),
    (["data.root=/mnt/data", "device=cpu", "tracking.graph=false", "resume=auto"], "defaults"),  # where, not what
    (["data.root=/mnt/data", "model=conv"], "model=conv"),
    (["model.hidden=[64, 32]"], "model.hidden=[64,_32]"),                               # no space in a folder name
    (["+data.name=a/b"], "+data.name=a_b"),                                             # no `/` from a value
    (["model=conv", "optimizer=adam", "lr=0.1"], "model=conv,optimizer=adam,lr=0.1"),  # 32 characters: all
    (["epochs=1", "seed=3", "model=conv", "optimizer=adam"], "epochs=1,seed=3_and_2_more"),  # whole items, capped
])
def test_a_run_is_named_by_its_overrides_then_date_and_suffix(overrides, lead):
    assert run_dir_name(overrides, STAMP, UNIQUE) == f"{lead}-{STAMP}_{UNIQUE}"


def test_a_long_single_override_is_cut_with_a_hash():
    a = run_dir_name(["model.hidden=[" + "64," * 30 + "1]"], STAMP, UNIQUE)
    b = run_dir_name(["model.hidden=[" + "64," * 30 + "2]"], STAMP, UNIQUE)
    assert a != b and len(a) == len(b) == 32 + len(f"-{STAMP}_{UNIQUE}")


@pytest.mark.parametrize("params, overrides, name", [
    (None, ["optimizer=sgd,adam", "lr=1e-3,3e-3", "epochs=2"], "lr+optimizer"),   # no comma: it is typed back
    (None, ["seed=range(3)", "data.root=/x"], "seed"),
    ({"lr": "interval(1e-4, 1e-1)", "batch_size": "choice(32,64)"}, ["batch_size=64"], "lr"),  # pinned: not searched
    ({"lr": "interval(1e-4, 1e-1)"}, ["optimizer=choice(sgd,adam)"], "lr+optimizer"),
    (None, ["epochs=1"], ""),                                                            # -m with one point
    (None, ["model.hidden=[32],[64]", "optimizer.weight_decay=0,1e-4", "train.grad_clip=0,1", "seed=0,1"],
     "model.hidden_and_3_more"),
])
def test_a_sweep_is_named_by_the_keys_it_varies(params, overrides, name):
    expected = f"{name}-{STAMP}_{UNIQUE}" if name else f"{STAMP}_{UNIQUE}"
    assert sweep_dir_name(swept_keys(params, overrides), STAMP, UNIQUE) == expected


@pytest.mark.parametrize("num, dirname, name", [
    (0, "lr=0.001,optimizer=sgd", "0_lr=0.001,optimizer=sgd"),
    (3, "lr=0.0030000001", "3_lr=0.003"),
    (2, "", "2"),
])
def test_a_job_is_named_by_its_number_then_what_varies(num, dirname, name):
    assert job_dir_name(num, dirname) == name and job_number(name) == num


@pytest.mark.parametrize("num, overrides, varies", [
    (2, ["epochs=3", "optimizer=rmsprop", "lr=0.001"], ["lr", "optimizer"]),            # sorted as Hydra sorts
    (0, ["data.root=/data", "optimizer=adam"], ["data.root", "optimizer"]),             # where things are: never
    (1, ["+model.hidden=[64,32]", "seed=1"], ["model.hidden", "seed"]),                 # an appended key
    (4, ["epochs=2"], []),                                                              # nothing varies
    (7, [f"model.name=resnet_{'x' * 90}", "lr=0.1"], ["model.name", "lr"]),            # capped with a hash
])
def test_a_planned_job_is_named_as_hydra_names_its_folder(num, overrides, varies):
    """A job that never started is named from the plan (sweep.json) alone, as
    the folder Hydra makes of its override_dirname once it runs (the sweep
    leaves every key it does not vary, and where things are, out of it)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    exclude = [o.key_or_group for o in parsed if o.key_or_group not in varies or o.key_or_group == "data.root"]
    hydra_name = job_dir_name(num, get_overrides_dirname(parsed, exclude, ",", "="))
    assert planned_job_name(num, overrides, varies) == hydra_name


def test_the_default_run_folder_says_what_the_run_changes():
    """What `trainer model=conv lr=0.01` resolves hydra.run.dir to (the CLI and trainer.run compose the same)."""
    cfg = api.compose("model=conv", "lr=0.01", "data.root=/mnt/data", hydra_config=True)
    folder = str(cfg.hydra.run.dir)
    assert re.fullmatch(r"outputs/runs/model=conv,lr=0\.01-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", folder), folder
    assert str(cfg.hydra.run.dir) == folder  # resolved once: the same folder every time it is read


@pytest.mark.parametrize("folder, head", [
    ("outputs/sweeps/lr+optimizer-2026-12-05_11-02-26_a1f159/0_lr=0.001,optimizer=sgd", "0_lr=0.001,optimizer=sgd in "),
    ("outputs/runs/cv.folds=3-2026-12-05_11-02-42_4557b9/fold_2", "fold_2 in cv.folds=3-2026-12-05_11-02-42_4557b9 ("),
    ("outputs/runs/model=conv-2026-12-05_11-02-56_3831f0", "model=conv-2026-12-05_11-02-56_3831f0 in runs ("),
])
def test_an_hparams_row_is_named_by_its_folder_first(folder, head):
    assert trial_id(Path(folder)).startswith(head)


def test_rows_of_folders_with_the_same_name_stay_apart():
    """TensorBoard merges sessions that share a Trial ID into one row (and averages them)."""
    assert trial_id(Path("outputs/sweeps/a/0_lr=0.001")) != trial_id(Path("outputs/sweeps/b/0_lr=0.001"))


def test_a_sweep_folder_reads_back_as_one_folder():
    """`hydra.sweep.dir=<it> resume=auto` continues a sweep: Hydra must not read the name as several values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    name = sweep_dir_name({"lr", "optimizer", "optimizer.weight_decay"}, STAMP, UNIQUE)
    override = OverridesParser.create().parse_override(f"hydra.sweep.dir=outputs/sweeps/{name}")
    assert not override.is_sweep_override() and override.value() == f"outputs/sweeps/{name}"


@pytest.mark.parametrize("arg, expected", [
    ("hydra.run.dir=outputs/runs/model=conv,lr=0.01-2026", "hydra.run.dir='outputs/runs/model=conv,lr=0.01-2026'"),
    ("hydra.sweep.dir=outputs/sweeps/s/0_lr=0.001,optimizer=sgd", "hydra.sweep.dir='outputs/sweeps/s/0_lr=0.001,optimizer=sgd'"),
    ("hydra.run.dir='already quoted'", "hydra.run.dir='already quoted'"),
    ("hydra.run.dir=outputs/${now:%H}", "hydra.run.dir=outputs/${now:%H}"),                # an interpolation: as typed
    ("lr=0.01,0.1", "lr=0.01,0.1"),                                                      # not a folder: as typed
    ("hydra.run.dir=~/notes", f"hydra.run.dir='{Path.home()}/notes'"),                   # ~ as a shell expands it
])
def test_a_folder_typed_back_is_one_value(arg, expected):
    """`trainer hydra.run.dir=<the folder it printed> resume=auto` (a requeued job, torchrun)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert quoted_folder(arg) == expected
    if arg.startswith("hydra.") and "${" not in arg:
        assert not OverridesParser.create().parse_override(quoted_folder(arg)).is_sweep_override()
