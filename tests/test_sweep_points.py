"""A sweep's points are distinct, and seed groups count distinct runs:
trainer.sweeps.plan.duplicate_points and trainer.sweeps.groups.find, in-process."""
from __future__ import annotations

import pytest

from trainer.sweeps import groups
from trainer.sweeps.plan import duplicate_points, duplicates_error


@pytest.mark.parametrize("jobs, expected", [
    ([["seed=0"], ["seed=0"], ["seed=1"]], [(0, 1)]),                                   # seed=0,0,1
    ([["seed=0", "lr=1e-3"], ["seed=0", "lr=0.001"], ["seed=1", "lr=1e-3"], ["seed=1", "lr=0.001"]],
     [(0, 1), (2, 3)]),                                                                  # the same number twice
    ([["seed=0"], ["seed=1"], ["seed=2"]], []),
    ([["optimizer=sgd"], ["optimizer=adam"]], []),
    ([["model.hidden=[32, 16]"], ["model.hidden=[32,16]"]], [(0, 1)]),                  # one list, spelled twice
    ([["+x=1"], ["x=1.0"]], [(0, 1)]),
    ([[], []], [(0, 1)]),
])
def test_duplicate_points(jobs, expected):
    assert duplicate_points(jobs) == expected


def test_the_refusal_names_the_duplicate_in_one_line():
    message = duplicates_error([["seed=0", "epochs=1"], ["seed=0", "epochs=1"], ["seed=1", "epochs=1"]])
    assert message.startswith("the sweep lists the same point twice: job 1 (seed=0) is job 0")
    assert "\n" not in message and "epochs" not in message
    assert duplicates_error([["seed=0"], ["seed=1"]]) is None
    # Every job alike (lr=1e-2,0.01 optimizer=adam): the point itself, not "(defaults)", without data.root.
    alike = duplicates_error([["lr=0.01", "optimizer=adam", "data.root=d"], ["lr=0.01", "optimizer=adam", "data.root=d"]])
    assert alike.startswith("the sweep lists the same point twice: job 1 (lr=0.01 optimizer=adam) is job 0"), alike


def _row(job: str, overrides: str, acc: float | None, status: str = "completed") -> dict:
    return {"job": job, "overrides": overrides, "status": status, "test/acc": acc}


def test_a_group_counts_each_distinct_run_once():
    """`-m seed=0,1 lr=1e-3,0.001` from before the refusal: two runs, not four."""
    rows = [_row("0", "seed=0 lr=1e-3", 0.5), _row("1", "seed=0 lr=0.001", 0.5),
            _row("2", "seed=1 lr=1e-3", 0.7), _row("3", "seed=1 lr=0.001", 0.7)]
    (group,) = groups.find(rows)
    assert group["n"] == 2 and group["jobs"] == ["0", "2"]
    assert group["mean"] == pytest.approx(0.6)


def test_a_groups_jobs_and_values_pair_up():
    rows = [_row("3", "seed=2", 0.9), _row("0", "seed=0", 0.5), _row("1", "seed=0", 0.5),
            _row("2", "seed=1", None, "failed")]
    (group,) = groups.find(rows)
    assert list(zip(group["jobs"], group["values"])) == [("0", 0.5), ("2", None), ("3", 0.9)]
    assert group["n"] == 2 and group["failed"] == ["2"]


def test_repeats_in_different_sweeps_are_different_groups():
    rows = [_row("a/0", "seed=0", 0.5), _row("a/1", "seed=1", 0.6), _row("b/0", "seed=0", 0.7),
            _row("b/1", "seed=1", 0.8)]
    assert sorted(tuple(g["jobs"]) for g in groups.find(rows)) == [("a/0", "a/1"), ("b/0", "b/1")]
