"""trainer's Optuna sweeper (hparams_search=optuna): the search space, the
study's budget, pruning, resume, killed trials, trials forked warm with the
numbers of plain processes, and one study shared by two processes on a real
PostgreSQL server (tests/postgres.py)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", minversion="5")

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from helpers import metrics, run_cli, snapshot, tiny  # noqa: E402
from test_sweep_lifecycle import finish, job_pids, start, training, wait_until  # noqa: E402
from test_warm_jobs import job_records, without_timing  # noqa: E402
from trainer.core.errors import UserError  # noqa: E402
from trainer.sweeps import pruning, search_space, study as studies  # noqa: E402

SMALL = ("data.subset=32", "data.test_subset=32", "model.hidden=[16]", "checkpoint.every_n_steps=1")


# ------------------------------------------------------------ the search space
@pytest.mark.parametrize("params, arguments, distributions, fixed", [
    ({"lr": "tag(log, interval(1e-4, 1e-1))"}, [], {"lr": FloatDistribution(1e-4, 1e-1, log=True)}, []),
    ({"batch_size": "choice(32, 64, 128)"}, [], {"batch_size": CategoricalDistribution([32, 64, 128])}, []),
    ({"model.hidden": "range(128, 513, 128)"}, [], {"model.hidden": IntDistribution(128, 512, step=128)}, []),
    ({"epochs": "tag(int, interval(2, 10))"}, [], {"epochs": IntDistribution(2, 10)}, []),
    ({"optimizer": "choice(sgd, adam)"}, ["optimizer=adam"], {}, ["optimizer=adam"]),  # pinned by the command line
    ({}, ["lr=interval(0.001, 0.1)", "epochs=2"], {"lr": FloatDistribution(0.001, 0.1)}, ["epochs=2"]),
    ({"seed": 3}, [], {}, ["seed=3"]),
    ({"model": {"hidden": "choice(8, 16)"}}, [], {"model.hidden": CategoricalDistribution([8, 16])}, []),
])
def test_the_search_space_reads_hydras_sweep_syntax(params, arguments, distributions, fixed):
    space = search_space.parse(params, arguments)
    assert space.distributions == distributions
    assert space.fixed == fixed


@pytest.mark.parametrize("params", [{"lr": "interval(0.1, 0.01)"}, {"lr": "tag(log, interval(0, 1))"},
                                    {"x": "range(5, 5)"}, {"lr": "choice("}])
def test_an_empty_or_broken_search_space_is_one_line_naming_the_key(params):
    with pytest.raises(UserError) as e:
        search_space.parse(params, [])
    assert "hydra.sweeper.params" in str(e.value) and "\n" not in str(e.value)


def test_a_trials_values_become_overrides_hydra_reads_back():
    assert search_space.overrides({"lr": 0.0031, "optimizer": "adam", "model.hidden": [8, 8]}) == [
        "lr=0.0031", "model.hidden=[8, 8]", "optimizer=adam"]
    assert search_space.overrides({"name": "a b"}) == ["name='a b'"]


# ---------------------------------------------------------------- the budget
def _study(*trials):
    study = optuna.create_study(direction="maximize")
    for trial in trials:
        study.add_trial(trial)
    return study


def _trial(state, number_of_failed=None, over_budget=False, value=None):
    system = {"failed_trial": number_of_failed, "retry_history": [number_of_failed]} if number_of_failed is not None else {}
    return optuna.trial.create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                     system_attrs=system, user_attrs={studies.OVER_BUDGET: True} if over_budget else {})


def test_the_budget_counts_the_studys_trials_but_not_a_killed_one_tried_again():
    study = _study(_trial(TrialState.COMPLETE, value=1.0), _trial(TrialState.FAIL),          # 1: killed, retried
                   _trial(TrialState.COMPLETE, value=2.0), _trial(TrialState.FAIL, over_budget=True),
                   _trial(TrialState.COMPLETE, 1, value=3.0))                                # 4: the retry of 1
    assert [t.number for t in studies.counted(study.get_trials())] == [0, 2, 4]
    assert studies.budget_left(study, 4) == 1 and studies.budget_left(study, 3) == 0
    assert studies.within_budget(study, 4, 3) and not studies.within_budget(study, 5, 3)


def test_a_waiting_retry_is_run_even_when_the_budget_looks_spent():
    study = _study(_trial(TrialState.COMPLETE, value=1.0), _trial(TrialState.FAIL), _trial(TrialState.WAITING, 1))
    assert studies.budget_left(study, 2) == 1


def test_a_study_that_optimises_the_other_way_is_refused(tmp_path):
    storage = studies.open_storage(str(tmp_path / "s.journal"))
    studies.create(storage, "s", "maximize")
    with pytest.raises(UserError, match="hydra.sweeper.direction=maximize"):
        studies.create(storage, "s", "minimize")


def test_pruners_by_name():
    assert isinstance(pruning.make_pruner("median", 4), optuna.pruners.MedianPruner)
    assert isinstance(pruning.make_pruner("hyperband", 4), optuna.pruners.HyperbandPruner)
    assert isinstance(pruning.make_pruner("none", 4), optuna.pruners.NopPruner)
    with pytest.raises(UserError, match="median, hyperband"):
        pruning.make_pruner("sometimes", 4)


# ------------------------------------------------------------- end to end
def search_cmd(root: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    return ["-m", *tiny(root, *SMALL), "hparams_search=optuna",
            "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={sweep_dir}", *overrides]


def jobs(sweep_dir: Path) -> dict[str, Path]:
    """The sweep's job folders by name (none before the sweep made its folder)."""
    if not sweep_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(sweep_dir.iterdir()) if p.is_dir() and p.name.split("_")[0].isdigit()}


def load(storage: str):
    return optuna.load_study(study_name="trainer", storage=studies.open_storage(storage))


def test_pruning_stops_trials_behind_the_others(synthetic_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    # A loss to monitor (no ties), and learning rates from far too small to large enough.
    proc = start(search_cmd(synthetic_root, sweep_dir, "hydra.sweeper.n_trials=6", "hydra.sweeper.pruner=median",
                            "epochs=3", "data.subset=256", "data.test_subset=256", "checkpoint.every_n_steps=0",
                            "early_stopping.monitor=test/loss", "lr=tag(log, interval(1e-5, 0.5))"), tmp_path)
    done = finish(proc, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load(str(sweep_dir / studies.JOURNAL)).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(trials) == 6 and pruned, [t.state for t in trials]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["counts"]["pruned"] == len(pruned)
    for trial in pruned:
        record = metrics(Path(trial.user_attrs["dir"]))
        assert record["status"] == "pruned" and "pruned at epoch" in record["error"]
        assert len(record["history"]) == max(trial.intermediate_values)  # stopped at the epoch it was pruned
        assert (Path(trial.user_attrs["dir"]) / "checkpoints" / "last.ckpt").is_file()
    assert "failed job" not in done.stderr


def test_a_killed_trial_fails_and_its_parameters_are_tried_again(synthetic_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    # 200 epochs of about 35 ms: trial 0 is still training when it is found, on a loaded machine too.
    proc = start(search_cmd(synthetic_root, sweep_dir, "hydra.sweeper.n_trials=2", "epochs=200"), tmp_path)
    wait_until(lambda: any(training(job) for job in jobs(sweep_dir).values()) and job_pids(f"{sweep_dir}/0_"),
               "trial 0 trained an epoch", proc)
    (victim,) = job_pids(f"{sweep_dir}/0_")
    template = parent(victim)
    assert template != proc.pid and parent(template) == proc.pid  # forked from the sweep's warm template
    os.kill(victim, signal.SIGKILL)
    done = finish(proc, timeout=600)
    trials = load(str(sweep_dir / studies.JOURNAL)).get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["status"] == "killed"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == trials[0].params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2  # the budget: the killed trial does not count
    error = metrics(Path(trials[0].user_attrs["dir"]))["error"]
    # What becomes of it is what the search does: not `resume=auto`, which would do nothing for it.
    assert "killed by SIGKILL" in error and "the search tries its parameters again" in error, error
    assert "resume=auto" not in error and "resume=auto" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr[-3000:]  # the summary still names the killed job
    # The search's last line counts the trials as trainer-summary --study does.
    assert "Study 'trainer': 3 trials (1 fail, 2 complete); 2 count against n_trials=2 (not 1 failed and tried " \
           "again) in " in done.stdout, done.stdout


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_trial_forked_warm_gives_the_numbers_of_a_plain_process_bit_for_bit(synthetic_root, tmp_path):
    """The same search with its trials forked from the warm template and as
    plain `python -m trainer` processes: the same trials, every metric equal
    (CPU, deterministic=true), each epoch reported to the study (the pruner);
    a forked trial skips the imports a plain one pays at its start."""
    records, outputs = {}, {}
    for warm in ("true", "false"):
        sweep_dir = tmp_path / f"warm-{warm}"
        proc = start(search_cmd(synthetic_root, sweep_dir, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
                                "hydra.sweeper.pruner=median", "epochs=2", "data.subset=256", "data.val_split=64",
                                "device=cpu", "deterministic=true", "train.shuffle=true", "checkpoint.every_n_steps=0",
                                f"hydra.sweeper.warm={warm}"), tmp_path)
        outputs[warm] = finish(proc, timeout=600)
        assert outputs[warm].returncode == 0, outputs[warm].stderr[-3000:]
        records[warm] = job_records(sweep_dir)
        trials = load(str(sweep_dir / studies.JOURNAL)).get_trials()
        assert [sorted(t.intermediate_values) for t in trials] == [[1, 2], [1, 2]]
    assert "each forked from one warm process that read the data once" in outputs["true"].stdout
    assert "Jobs: 2 at a time × 1 thread = 2 threads on 2 cores; each a fresh process" in outputs["false"].stdout
    assert list(records["true"]) == list(records["false"]) and len(records["true"]) == 2
    for name, forked in records["true"].items():
        assert forked["status"] == "completed"
        assert without_timing(forked) == without_timing(records["false"][name]), name
    startup = {warm: [r["timing"]["startup_seconds"] for r in records[warm].values()] for warm in records}
    assert max(startup["true"]) < min(startup["false"]), startup


def test_sigterm_then_resume_auto_continues_the_study(synthetic_root, tmp_path):
    """SIGTERM while trial 1 trains: resume=auto keeps trial 0 as it is,
    continues trial 1 from its checkpoint, and runs the rest of a larger budget."""
    sweep_dir = tmp_path / "sweep"
    args = ("hydra.sweeper.n_trials=2", "epochs=100")
    proc = start(search_cmd(synthetic_root, sweep_dir, *args), tmp_path)
    wait_until(lambda: any(n.startswith("1_") and training(j, 2) for n, j in jobs(sweep_dir).items()),
               "trial 1 trained 2 epochs", proc)
    first = next(j for n, j in jobs(sweep_dir).items() if n.startswith("0_"))
    before = snapshot(first)
    proc.send_signal(signal.SIGTERM)
    stopped = finish(proc)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert not job_pids(str(sweep_dir)), "a trial of the stopped search is still running"

    more = [a if a != "hydra.sweeper.n_trials=2" else "hydra.sweeper.n_trials=3" for a in args]
    resumed = run_cli(search_cmd(synthetic_root, sweep_dir, *more, "resume=auto"), tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert snapshot(first) == before  # not trained again, not touched
    trials = load(str(sweep_dir / studies.JOURNAL)).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    second = metrics(Path(trials[1].user_attrs["dir"]))
    assert second["resumed"] == 1 and [h["epoch"] for h in second["history"]] == list(range(1, 101))
    assert sorted(jobs(sweep_dir)) == sorted(Path(t.user_attrs["dir"]).name for t in trials)


def test_two_processes_share_one_study_on_postgresql(synthetic_root, tmp_path, postgres_url):
    """Two searches started at once on one fresh PostgreSQL database: one
    budget, trial numbers 0-5 each run once, each in one job folder."""
    procs = [start(search_cmd(synthetic_root, tmp_path / f"sweep{i}", "hydra.sweeper.n_trials=6",
                              f"hydra.sweeper.storage={postgres_url}"), tmp_path / f"{i}")
             for i in (0, 1) if (tmp_path / f"{i}").mkdir() is None]
    for proc in procs:
        done = finish(proc, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    trials = load(postgres_url).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.number for t in complete) == list(range(6))
    folders = [p for i in (0, 1) for p in jobs(tmp_path / f"sweep{i}").values()]
    assert sorted(int(p.name.split("_")[0]) for p in folders) == list(range(6))
    assert {str(p.resolve()) for p in folders} == {t.user_attrs["dir"] for t in complete}
    assert all(metrics(p)["status"] == "completed" for p in folders)


def test_trainer_summary_study_lists_every_trial_with_its_machine_and_folder(tmp_path, capsys):
    from trainer.sweeps import summary

    storage = studies.open_storage(str(tmp_path / studies.JOURNAL))
    study = studies.create(storage, "trainer", "maximize")
    for number, (state, host) in enumerate([(TrialState.COMPLETE, "a"), (TrialState.PRUNED, "b"),
                                            (TrialState.FAIL, "a")]):
        trial = study.ask({"lr": FloatDistribution(1e-4, 1e-1, log=True)})
        trial.set_user_attr("host", host)
        trial.set_user_attr("dir", f"/sweeps/{host}/{number}_lr=x")
        if state == TrialState.FAIL:
            trial.set_user_attr("status", "diverged")
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    assert summary.main(["--study", str(tmp_path), "trainer"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Study 'trainer': 3 trials (1 complete, 1 pruned, 1 fail)"
    assert [line.split()[:2] for line in out[2:]] == [["0", "complete"], ["1", "pruned"], ["2", "fail"]]
    assert "(diverged)" in out[4] and out[3].split()[-2:] == ["b", "/sweeps/b/1_lr=x"]
    with pytest.raises(SystemExit) as refused:
        summary.main(["--study", str(tmp_path / "none"), "trainer"])
    assert refused.value.code == 1 and "no study storage at" in capsys.readouterr().err


def _study_with_a_killed_trial_tried_again(tmp_path):
    """A journal study of 3 trials: 0 killed (FAIL), 1 its retry, 2 another; and the search's plan (n_trials=2)."""
    from trainer.sweeps import search

    journal = str(tmp_path / studies.JOURNAL)
    study = studies.create(studies.open_storage(journal), "trainer", "maximize")
    space = search_space.parse({"lr": "tag(log, interval(1e-4, 1e-1))"}, [])
    plan = search.Search(sweep_dir=tmp_path, study_name="trainer", storage=journal, direction="maximize",
                         n_trials=2, n_jobs=1, space=space)
    trials = [study.ask(space.distributions)]
    study.tell(trials[0], state=TrialState.FAIL)
    search.Runner(plan, study).retry(trials[0].number)
    for value in (0.5, 0.7):  # the retry first: the study hands out a waiting trial before a new one
        trials.append(study.ask(space.distributions))
        study.tell(trials[-1], value)
    return study, plan, trials


def test_a_killed_trials_record_says_what_the_search_does_with_it(tmp_path):
    from trainer.sweeps import search

    _, _, (first, retry, other) = _study_with_a_killed_trial_tried_again(tmp_path)
    assert search.if_killed(first) == search.if_killed(other) == (
        "the search tries its parameters again, once, as a new trial")
    assert search.if_killed(retry) == "not tried again: it was the search's retry of trial 0"


def test_the_search_and_trainer_summary_count_a_studys_trials_alike(tmp_path, capsys):
    """A killed trial tried again: both say every trial the study holds, and
    how many of them use the budget."""
    from trainer.sweeps import search, summary

    study, plan, _ = _study_with_a_killed_trial_tried_again(tmp_path)
    journal = plan.storage
    line = search.study_line(study, plan)
    assert summary.main(["--study", str(tmp_path), "trainer"]) == 0
    listed = capsys.readouterr().out.splitlines()[0]
    held = "Study 'trainer': 3 trials (1 fail, 2 complete); 2 count against n_trials"
    assert line == f"{held}=2 (not 1 failed and tried again) in {journal}"
    assert listed == f"{held} (not 1 failed and tried again)"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the lost machine's own ask, below
def test_a_trial_whose_heartbeat_went_stale_is_failed_and_asked_again(tmp_path):
    """A lost machine's trial (no process here, its heartbeat stopped): the
    next worker to ask fails it and gets its parameters again."""
    import time

    from trainer.sweeps import search

    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = studies.open_storage(url, heartbeat_interval=1, grace_period=1)
    study = studies.create(storage, "trainer", "maximize")
    space = search_space.parse({"lr": "tag(log, interval(1e-4, 1e-1))"}, [])
    lost = study.ask(space.distributions)
    storage.record_heartbeat(lost._trial_id)
    time.sleep(2.5)  # past the grace period
    runner = search.Runner(search.Search(sweep_dir=tmp_path, study_name="trainer", storage=url,
                                         direction="maximize", n_trials=2, n_jobs=1, space=space), study)
    retry = runner.next_trial()
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert retry.trial.params == lost.params and trials[retry.number].system_attrs["failed_trial"] == 0
    assert retry.run_dir.name.startswith(f"{retry.number}_lr=")
