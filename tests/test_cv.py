"""Cross-validation, seed groups and curves.png: the real CLI on synthetic
data, the numbers recomputed from the runs' own files."""
from __future__ import annotations

import json
import shutil
import signal
import statistics
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import CliProcess, compose_cfg, check_before_data, metrics, one_line_error, run_cli, snapshot, start_cli, tiny
from trainer.core import data
from trainer.core.errors import UserError
from trainer.report import figures
from trainer.sweeps import summary

# A picture of several runs has its legend beside the two panels, which keep the width of one run's.
OVERLAY_LEGEND_PX = round(figures.LEGEND_WIDTH_IN * figures.DPI)

# 96 images: each fold validates on 32 and trains on 64 (2 steps of 32).
SMALL = ("data.subset=96", "model.hidden=[16]", "lr=0.05", "train.log_every_n_steps=1")


def best(run_dir: Path) -> float:
    record = metrics(run_dir)
    return record["best"][record["monitor"]]


# ------------------------------------------------------------------ the split
def test_folds_are_stratified_disjoint_and_cover_the_set():
    labels = torch.arange(100) % 10
    labels[::7] = 3  # uneven classes
    folds = data.fold_of_each_sample(labels, 3, seed=0)
    assert set(folds.tolist()) == {1, 2, 3}
    sizes = torch.bincount(folds)[1:]
    assert sizes.max() - sizes.min() <= 1  # every sample in exactly one fold, folds within one of each other
    for c in labels.unique():
        per_fold = torch.bincount(folds[labels == c], minlength=4)[1:]
        assert per_fold.max() - per_fold.min() <= 1, (int(c), per_fold.tolist())  # each class spread evenly
    assert torch.equal(folds, data.fold_of_each_sample(labels, 3, seed=0))  # seeded
    assert not torch.equal(folds, data.fold_of_each_sample(labels, 3, seed=1))
    x = torch.arange(100)
    (train_x, _), (val_x, _) = data.split_fold(x, labels, 3, 2, seed=0)
    assert sorted(train_x.tolist() + val_x.tolist()) == list(range(100)) and not set(train_x.tolist()) & set(val_x.tolist())


@pytest.mark.parametrize("overrides, named", [
    (["cv.folds=1"], "cv.folds=1"),
    (["cv.folds=3", "data.val_split=100"], "data.val_split=100"),
    (["cv.folds=3", "cv.fold=4"], "cv.fold=4"),
    (["cv.refit=true"], "cv.refit=true"),
    (["cv.folds=1000"], "cv.folds=1000"),
    (["cv.folds=60", "data.subset=50"], "cv.folds=60"),
    (["cv.fold=1"], "set cv.folds too"),
])
def test_bad_cross_validation_settings_are_one_line(overrides, named):
    with pytest.raises(UserError) as e:
        check_before_data(compose_cfg(overrides))
    assert named in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ a CV run
@pytest.fixture(scope="module")
def cv_run(synthetic_root, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cv")
    proc = run_cli(tiny(synthetic_root, *SMALL, "epochs=2", "cv.folds=3", "cv.refit=true",
                        f"hydra.run.dir={cwd / 'cv'}"), cwd, check=True)
    return proc, cwd / "cv"


def test_each_fold_is_an_ordinary_run(cv_run):
    _, run_dir = cv_run
    for k in (1, 2, 3):
        fold = run_dir / f"fold_{k}"
        record = metrics(fold)
        assert record["status"] == "completed" and record["monitor"] == "val/acc"
        assert f"cv.fold={k}" in record["overrides"]
        assert (fold / "checkpoints" / "last.ckpt").is_file() and list(fold.glob("events.out.tfevents.*"))
        assert [h["epoch"] for h in record["history"]] == [1, 2]
        # A fold never looks at the test set: only cv.refit does, once.
        assert not any(key.startswith("test") for key in record["final"]), record["final"]


def test_the_cv_record_holds_the_folds_mean_and_sample_std(cv_run):
    proc, run_dir = cv_run
    record = metrics(run_dir)
    values = [best(run_dir / f"fold_{k}") for k in (1, 2, 3)]
    final = record["final"]
    assert record["status"] == "completed" and record["monitor"] == "cv/mean"
    assert final["cv/folds"] == values
    assert final["cv/mean"] == pytest.approx(statistics.fmean(values))
    assert final["cv/std"] == pytest.approx(statistics.stdev(values))  # the sample standard deviation
    assert record["best"]["cv/mean"] == final["cv/mean"]
    assert [row["fold"] for row in record["history"]] == [1, 2, 3]
    # Refit: one more run on the whole training set, its test numbers in the CV record.
    assert final["test/acc"] == metrics(run_dir / "refit")["final"]["test/acc"]
    assert "cross-validated val/acc" in proc.stdout and "over 3 of 3 folds" in proc.stdout


@pytest.mark.parametrize("change", ["cv.folds=0", "cv.folds=4", "model.hidden=[8]", "lr=0.1"])
def test_a_cross_validation_resumed_with_a_change_it_cannot_take_is_left_as_it_is(cv_run, tmp_path, change):
    """cv.folds=0 would train a single run over the CV's record, 4 folds would
    cut the data otherwise than the 3 trained, another model would not be
    the one the folds trained; a new lr has no epoch left to apply to."""
    _, trained = cv_run
    run_dir = tmp_path / "cv"
    shutil.copytree(trained, run_dir)
    before = snapshot(run_dir)
    line = one_line_error(run_cli([f"resume={run_dir}", change], tmp_path))
    assert change.split("=")[0] in line, line
    assert snapshot(run_dir) == before


def test_a_completed_cross_validation_trains_on_when_given_more_epochs(cv_run, tmp_path):
    _, trained = cv_run
    run_dir = tmp_path / "cv"
    shutil.copytree(trained, run_dir)
    run_cli([f"resume={run_dir}", "epochs=3"], tmp_path, check=True)
    assert [[h["epoch"] for h in metrics(run_dir / f"fold_{k}")["history"]] for k in (1, 2, 3)] == [[1, 2, 3]] * 3
    assert metrics(run_dir)["final"]["epochs"] == 3


def test_curves_are_pictures_of_the_runs(cv_run):
    _, run_dir = cv_run
    with Image.open(run_dir / "fold_1" / "curves.png") as image:
        assert image.size[0] == 800 and image.size[1] > 200
    with Image.open(run_dir / "curves.png") as image:  # the folds as a mean with a band, the legend beside them
        assert image.size[0] == 800 + OVERLAY_LEGEND_PX
    doc = json.loads((run_dir / "summary.json").read_text())
    (group,) = doc["groups"]
    assert group["folds"] and group["n"] == 3 and group["metric"] == "val/acc"
    assert group["mean"] == pytest.approx(metrics(run_dir)["final"]["cv/mean"])


# ------------------------------------------------------------------ a failed fold, a stopped one
def _fault(args: list[str], cwd: Path, **fault) -> CliProcess:
    return start_cli(args, cwd, fault=fault)


def test_a_failed_fold_is_reported_and_the_others_still_run(synthetic_root, tmp_path):
    run_dir = tmp_path / "cv"
    # Calls 3 and 4 are fold 2's two steps: its loss becomes NaN.
    proc = _fault(tiny(synthetic_root, *SMALL, "epochs=1", "cv.folds=3", f"hydra.run.dir={run_dir}"), tmp_path,
                  nan_at_calls=[3])
    line = one_line_error(proc.finish())
    assert "fold 2 diverged" in line, line
    record = metrics(run_dir)
    assert record["status"] == "failed" and record["final"]["cv/n"] == 2
    assert [metrics(run_dir / f"fold_{k}")["status"] for k in (1, 2, 3)] == ["completed", "diverged", "completed"]
    assert record["final"]["cv/mean"] == pytest.approx(statistics.fmean([best(run_dir / "fold_1"),
                                                                         best(run_dir / "fold_3")]))


def test_an_interrupted_cross_validation_resumes_where_it_stopped(synthetic_root, tmp_path):
    run_dir, ready = tmp_path / "cv", tmp_path / "ready"
    # From each fold's step 3 on, each logged step touches `ready` and is slow. SIGINT
    # goes once fold 2 has logged a step (not while it is still being built, on a loaded machine).
    proc = _fault(tiny(synthetic_root, *SMALL, "epochs=3", "cv.folds=3", f"hydra.run.dir={run_dir}"), tmp_path,
                  ready=str(ready), slow_from_step=3, slow_seconds=0.5)
    deadline = time.monotonic() + 180
    for fold_2_logged in (False, True):
        while not (run_dir / "fold_2" / "metrics.json").is_file() or (fold_2_logged and not ready.exists()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.finish().stderr[-2000:]
            time.sleep(0.05)
        ready.unlink(missing_ok=True)
    fold_1 = snapshot(run_dir / "fold_1")
    proc.send_signal(signal.SIGINT)
    err = proc.finish(timeout=120).stderr
    assert proc.returncode == 130
    record = metrics(run_dir)
    assert record["status"] == "interrupted" and f"resume={run_dir}" in record["error"]
    # The console names the cross-validation to continue, not the fold (that would train fold 2 alone).
    assert f"resume={run_dir}\n" in err and "resume=" + str(run_dir / "fold_2") not in err, err[-1500:]
    assert metrics(run_dir / "fold_2")["status"] == "interrupted" and not (run_dir / "fold_3").exists()
    done = run_cli([f"resume={run_dir}"], tmp_path, check=True)
    assert "cross-validated val/acc" in done.stdout
    assert snapshot(run_dir / "fold_1") == fold_1  # finished: kept as it was
    assert metrics(run_dir / "fold_2")["resumed"] == 1
    assert [metrics(run_dir / f"fold_{k}")["status"] for k in (1, 2, 3)] == ["completed"] * 3
    assert metrics(run_dir)["status"] == "completed" and metrics(run_dir)["final"]["cv/n"] == 3


# ------------------------------------------------------------------ in sweeps
def test_a_sweep_of_cross_validations_compares_their_means(synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *tiny(synthetic_root, *SMALL, "epochs=1", "cv.folds=2"), "lr=0.001,0.05",
                    f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["job"]: r for r in json.loads((sweep / "summary.json").read_text())["rows"]}
    for job, row in rows.items():
        assert row["cv/mean"] == metrics(sweep / job)["final"]["cv/mean"]
    assert [r["job"] for r in json.loads((sweep / "summary.json").read_text())["rows"]] == sorted(
        rows, key=lambda j: -rows[j]["cv/mean"])  # ranked by the cross-validated mean
    assert "cv val/acc mean ± std" in proc.stdout


def test_optuna_tunes_on_the_cross_validated_mean(synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *tiny(synthetic_root, *SMALL, "epochs=1", "cv.folds=2"), "hparams_search=optuna",
                    "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import yaml

    means = [metrics(job)["final"]["cv/mean"] for job in sweep.iterdir() if (job / "metrics.json").is_file()]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(means))  # not a test-set number


# ------------------------------------------------------------------ seed groups
def test_jobs_that_differ_only_in_seed_form_groups(synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *tiny(synthetic_root, "data.subset=96", "model.hidden=[16]"), "seed=0,1,2",
                    "optimizer=sgd,adam", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((sweep / "summary.json").read_text())
    assert len(doc["groups"]) == 2
    for group in doc["groups"]:
        assert group["n"] == 3 and group["metric"] == "test/acc" and "seed" not in group["overrides"]
        values = [metrics(sweep / job)["final"]["test/acc"] for job in group["jobs"]]
        assert group["mean"] == pytest.approx(statistics.fmean(values))
        assert group["std"] == pytest.approx(statistics.stdev(values))
        assert {metrics(sweep / job)["hparams"]["optimizer"] for job in group["jobs"]} == \
            {group["overrides"]["optimizer"]}
    assert "Seed groups" in proc.stdout and "(n=3)" in proc.stdout
    assert "## Seed groups" in (sweep / "summary.md").read_text()
    with Image.open(sweep / "curves.png") as image:
        assert image.size[0] == 800 + OVERLAY_LEGEND_PX
    # trainer-summary rebuilds the same groups from the files alone.
    (sweep / "summary.json").unlink()
    (sweep / "curves.png").unlink()
    assert summary.main([str(sweep), "--quiet"]) == 0
    assert json.loads((sweep / "summary.json").read_text())["groups"] == doc["groups"]
    assert (sweep / "curves.png").is_file()
    # A job continued after an interrupt records how (resume=...): it is still the same job of its group.
    first = sweep / doc["groups"][0]["jobs"][0] / ".hydra" / "overrides.yaml"
    first.write_text(first.read_text() + f"- resume='{first.parent.parent}/checkpoints/last.ckpt'\n")
    assert summary.main([str(sweep), "--quiet"]) == 0
    assert json.loads((sweep / "summary.json").read_text())["groups"] == doc["groups"]
