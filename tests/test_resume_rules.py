"""The resume rules as pure functions, table-driven and in-process: which
changes a resume may make to a saved run, how many epochs it may ask for,
and what early stopping compares with after a resume."""
from __future__ import annotations

import pytest

from trainer.core.engine import EarlyStopping
from trainer.core.errors import UserError
from trainer.runs import resume

SAVED = {"epochs": 3, "lr": 0.001, "batch_size": 64, "seed": 0, "scheduler": {"name": "none"},
         "model": {"_target_": "trainer.core.models.MLP", "hidden": [512, 512]},
         "optimizer": {"_target_": "torch.optim.SGD", "momentum": 0.0},
         "early_stopping": {"monitor": "val/acc", "patience": 0}, "data": {"subset": 0, "root": "data"},
         "resume": None}
AT_EPOCH_END = {"epoch": 3, "step": 0}   # two epochs done, the third not started
MID_EPOCH = {"epoch": 2, "step": 5}      # inside the second epoch


def changed(**new) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SAVED.items()}
    for key, value in new.items():
        group, _, leaf = key.partition("__")
        if leaf:
            out[group] = {**out[group], leaf: value}
        else:
            out[group] = value
    return out


@pytest.mark.parametrize("new, position, applies", [
    (changed(epochs=5), AT_EPOCH_END, {"epochs": (3, 5)}),
    (changed(lr=0.01), MID_EPOCH, {"lr": (0.001, 0.01)}),
    (changed(early_stopping__patience=2), MID_EPOCH, {"early_stopping.patience": (0, 2)}),
    (changed(data__root="/elsewhere"), MID_EPOCH, {"data.root": ("data", "/elsewhere")}),
    (changed(batch_size=32), AT_EPOCH_END, {"batch_size": (64, 32)}),   # where an epoch starts: fine
    (changed(resume="auto"), MID_EPOCH, {}),                            # how it was launched: never compared
    (SAVED, MID_EPOCH, {}),
])
def test_changes_that_apply(new, position, applies):
    assert resume.check_changes(SAVED, new, position) == applies


@pytest.mark.parametrize("new, position, refusal", [
    (changed(batch_size=32), MID_EPOCH, r"batch_size=32 \(the run has 64\) cannot change in the middle of an epoch"),
    (changed(seed=1), AT_EPOCH_END, r"seed=1 \(the run has 0\) cannot change when resuming"),
    (changed(model__hidden=[64]), AT_EPOCH_END, r"model.hidden=\[64\]"),
    (changed(model___target_="trainer.core.models.ConvNet"), AT_EPOCH_END, r"^model=trainer.core.models.ConvNet"),
    (changed(epochs=5, scheduler__name="cosine"), AT_EPOCH_END, r"scheduler.name=cosine"),
    (changed(epochs=1), AT_EPOCH_END, r"epochs=1 is fewer than the run has already trained \(2\)"),
    (changed(epochs=1), MID_EPOCH, r"epochs=1 is fewer than the run has already trained \(2\)"),
])
def test_changes_that_are_refused_name_the_key(new, position, refusal):
    with pytest.raises(UserError, match=refusal):
        resume.check_changes(SAVED, new, position)


def test_a_schedule_laid_over_the_run_fixes_its_length():
    saved = changed(scheduler__name="onecycle")
    with pytest.raises(UserError, match="scheduler=onecycle laid out its schedule over the whole run"):
        resume.check_changes(saved, {**saved, "epochs": 5}, AT_EPOCH_END)


@pytest.mark.parametrize("epochs, trained, ok", [(3, 3, True), (5, 3, True), (2, 3, False), (1, 0, True)])
def test_a_run_is_never_made_shorter_than_it_trained(epochs, trained, ok):
    if ok:
        resume.check_epochs(epochs, trained)
    else:
        with pytest.raises(UserError, match=f"epochs={epochs} is fewer than the run has already trained"):
            resume.check_epochs(epochs, trained)


HISTORY = [{"epoch": 1, "val/loss": 2.2967, "val/acc": 0.50, "train/acc": 0.6},
           {"epoch": 2, "val/loss": 2.2947, "val/acc": 0.48, "train/acc": 0.7},
           {"epoch": 3, "val/loss": 2.2990, "val/acc": 0.47, "train/acc": 0.8}]


@pytest.mark.parametrize("monitor, mode, patience, best, best_epoch, bad, stop", [
    ("val/acc", "max", 2, 0.50, 1, 2, True),
    ("val/loss", "min", 2, 2.2947, 2, 1, False),   # a falling loss became best at epoch 2
    ("train/acc", "max", 2, 0.8, 3, 0, False),     # a rising train/acc never stops the run
])
def test_early_stopping_after_resume_compares_with_its_own_metric(monitor, mode, patience, best, best_epoch, bad,
                                                                   stop):
    es = EarlyStopping(monitor, mode, patience)
    es.load_state_dict({"best": 0.50, "best_epoch": 1, "bad_epochs": 2})  # what a val/acc run saved
    es.replay(HISTORY)
    assert (es.best, es.best_epoch, es.bad_epochs, es.should_stop) == (best, best_epoch, bad, stop)


def test_a_monitor_the_history_lacks_is_refused():
    with pytest.raises(UserError, match="early_stopping.monitor=test/acc: the run's recorded epochs have no test/acc"):
        EarlyStopping("test/acc", "max").replay(HISTORY)


@pytest.mark.parametrize("saved, here, refusal", [
    (2, 3, r"is at epoch 2, and .* has recorded 3: continuing from it would overwrite epoch 3"),
    (1, 3, r"would overwrite epochs 2-3"),
])
def test_an_earlier_checkpoint_never_overwrites_recorded_epochs(tmp_path, saved, here, refusal):
    state = {"history": HISTORY[:saved]}
    with pytest.raises(UserError, match=refusal):
        resume.check_rewind((tmp_path / "best.ckpt", state), tmp_path, {"history": HISTORY[:here]})
    resume.check_rewind((tmp_path / "best.ckpt", state), tmp_path, {"history": HISTORY[:saved]})  # nothing lost
