"""An Optuna search as a sweep (trainer's Hydra sweeper, hparams_search=optuna).

The study lives in its storage, created once before any trial starts. This
process keeps `n_jobs` trials running, each a job process of its own
(`python -m trainer ... hydra.run.dir=<sweep>/<number>_<what it tried>`),
started and watched as the launcher's jobs are (trainer.sweeps.launcher):
forked from the warm template, or with `hydra.sweeper.warm=false` a plain
process. A slot that frees asks the study for the next trial at once. The budget
(`n_trials`) is the study's, whichever process or machine runs its trials.

How a trial ends, in the study:
    completed                      COMPLETE with its best monitored value
    pruned (hydra.sweeper.pruner)  PRUNED at the epoch the pruner stopped it
    failed, diverged               FAIL: the sampler learns nothing from a made-up value
    killed (SIGKILL, OOM)          FAIL, and its parameters are tried again once
    interrupted (the search was    left RUNNING: `resume=auto` in the same sweep
      stopped)                     folder continues it from its checkpoint
A trial whose machine was lost goes silent: on a database storage its
heartbeat goes stale, and the next worker to ask fails it and tries its
parameters again once.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trainer.core import streams
from trainer.core.errors import UserError, warn
from trainer.core.files import write_text
from trainer.runs import record
from trainer.runs.build import call_target
from trainer.runs.folder import RunFolder
from trainer.sweeps import callback as sweep_callback
from trainer.sweeps import search_space, study as studies
from trainer.sweeps.launcher import JobRunner, JobSpec, job_argv, stopping
from trainer.sweeps.plan import job_dir_name

ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_PRUNER = ("TRAINER_OPTUNA_STORAGE", "TRAINER_OPTUNA_STUDY",
                                                 "TRAINER_OPTUNA_TRIAL_ID", "TRAINER_OPTUNA_PRUNER")


@dataclass
class Search:
    """A search's settings, as plain values (hydra.sweeper and the command line)."""

    sweep_dir: Path
    study_name: str
    storage: str                 # studies.location(): a database URL or a journal file
    direction: str               # maximize | minimize
    n_trials: int
    n_jobs: int
    space: search_space.Space
    hydra_overrides: list[str] = field(default_factory=list)
    pruner: str = "none"
    heartbeat_interval: int = 10
    grace_period: int = 60
    resume: bool = False
    warm: bool = True            # trials forked from the warm template; False: plain processes
    dataset: dict | None = None  # the trials' data, for the template to decode once
    threads: int = 0             # the trials' `threads=` (0: their share of the cores)


@dataclass
class Trial:
    """A trial this process runs."""

    trial: object                # optuna.trial.Trial
    run_dir: Path
    resumed: bool = False
    process: object = None       # subprocess.Popen or forkserver.ForkedJob (JobRunner.start)

    @property
    def number(self) -> int:
        return self.trial.number


def run(search: Search, sampler: dict | None = None) -> None:
    """The search, to its end or to a signal (then the summary, and exit 128+signal).
    `sampler`: hydra.sweeper.sampler, `_target_` and its arguments."""
    if search.n_jobs < 1 or search.n_trials < 1:
        raise UserError(f"hydra.sweeper.n_trials={search.n_trials} and n_jobs={search.n_jobs} must be at least 1")
    database = studies.is_database(search.storage)
    storage = studies.open_storage(search.storage, search.heartbeat_interval if database else None,
                                   search.grace_period)
    study = studies.create(storage, search.study_name, search.direction)
    study.sampler = make_sampler(sampler or {}, len(study.get_trials(deepcopy=False)), database)
    runner = Runner(search, study)
    sweep_callback.announce()  # the study is open and the search space read: the search runs
    runner.jobs.prepare(search.dataset)
    runner.jobs.announce(search.threads)
    with runner.jobs.signals(stopping("the search's running trials", "trial")):
        beats = _Heartbeats(runner, storage, search.heartbeat_interval) if database else None
        try:
            runner.loop()
        finally:
            if beats is not None:
                beats.stop()
    write_results(study, search.sweep_dir)
    if runner.stop_signal:
        sweep_callback.stopped(search.sweep_dir, runner.stop_signal)
    streams.write(study_line(study, search))


def write_results(study, sweep_dir: Path) -> None:
    """optimization_results.yaml, as hydra-optuna-sweeper wrote it: the best trial so far."""
    try:
        best = study.best_trial
    except ValueError:  # no trial completed
        return
    text = yaml.safe_dump({"name": "optuna", "best_trial": best.number, "best_params": dict(best.params),
                           "best_value": float(best.value)}, sort_keys=False)
    write_text(sweep_dir / "optimization_results.yaml", text)


def make_sampler(spec: dict, trials_before: int, shared: bool):
    """The sampler, its seed moved on by the trials the study already holds
    (a continued search does not propose its first trials again) and, on a
    database other machines share, by this process's id (two machines
    starting at once do not propose the same trials)."""
    spec = dict(spec) or {"_target_": "optuna.samplers.TPESampler"}
    if spec.get("seed") is not None:
        spec["seed"] = int(spec["seed"]) + trials_before + (os.getpid() if shared else 0)
    return call_target(spec, "hydra.sweeper.sampler")


def study_line(study, search: Search) -> str:
    """The search's last line: the study's trials as `trainer-summary --study` counts them."""
    return (f"Study '{search.study_name}': {studies.census(study.get_trials(deepcopy=False), search.n_trials)} "
            f"in {studies.redacted(search.storage)}")


class Runner:
    """Keeps n_jobs trials running until the study's budget is spent."""

    def __init__(self, search: Search, study):
        self.search, self.study = search, study
        self.jobs = JobRunner(search.n_jobs, warm=search.warm)
        self.running: list[Trial] = []
        self.to_resume = resumable(study, search.sweep_dir) if search.resume else []
        self.ask_after = 0.0  # when the budget was spent: ask again now and then (a retry may come)

    @property
    def stop_signal(self) -> int:
        return self.jobs.stop_signal

    def loop(self) -> None:
        while True:
            while self.jobs.free():
                trial = self.next_trial()
                if trial is None:
                    break
                self.start(trial)
            for _, process in self.jobs.finished():
                trial = next(t for t in self.running if t.process is process)
                self.running.remove(trial)
                self.conclude(trial)
            if not self.running and (self.stop_signal or time.monotonic() < self.ask_after):
                return
            time.sleep(0.05)

    def next_trial(self) -> Trial | None:
        import optuna

        if self.to_resume:
            return self.to_resume.pop(0)
        if time.monotonic() < self.ask_after:
            return None
        optuna.storages.fail_stale_trials(self.study)  # a database's silent trials: failed, tried again once
        if studies.budget_left(self.study, self.search.n_trials) <= 0:
            self.ask_after = time.monotonic() + 1.0
            return None
        with warnings.catch_warnings():
            # "Heartbeat of storage is supposed to be used with Study.optimize": this process records them
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask(self.search.space.distributions)
        if not studies.within_budget(self.study, trial.number, self.search.n_trials):
            trial.set_user_attr(studies.OVER_BUDGET, True)  # another machine asked first
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.ask_after = time.monotonic() + 1.0
            return None
        name = job_dir_name(trial.number, ",".join(search_space.overrides(trial.params)))
        run_dir = (self.search.sweep_dir / name).resolve()
        for key, value in (("host", socket.gethostname()), ("dir", str(run_dir))):
            trial.set_user_attr(key, value)
        return Trial(trial, run_dir)

    def start(self, trial: Trial) -> None:
        overrides = self.search.space.fixed + search_space.overrides(trial.trial.params)
        if trial.resumed and "resume=auto" not in overrides:
            overrides.append("resume=auto")
        env = {}
        if self.search.pruner != "none":
            env = {ENV_STORAGE: self.search.storage, ENV_STUDY: self.search.study_name,
                   ENV_TRIAL: str(trial.trial._trial_id), ENV_PRUNER: self.search.pruner}
        argv = job_argv(overrides, self.search.hydra_overrides, trial.run_dir, trial.number)
        trial.process = self.jobs.start(JobSpec(trial.number, overrides, trial.run_dir, argv, self.search.dataset,
                                                self.search.threads, env, if_killed=if_killed(trial.trial)))
        self.running.append(trial)

    def conclude(self, trial: Trial) -> None:
        """Tell the study how the trial ended (the run folder's record says)."""
        from optuna.trial import TrialState

        code = trial.process.returncode  # below 0: killed by a signal, and so marked in its folder
        data = record.read(trial.run_dir) or {}
        if code < 0:  # killed; by the search's own stop while it was starting: interrupted, as its record says
            status = "interrupted" if self.jobs.stopped_by_sweep(trial.process) else "killed"
        else:
            status = str(data.get("status") or "failed")
        if status == "interrupted":
            if not self.stop_signal:  # stopped alone, the search goes on: continue it
                self.to_resume.append(Trial(trial.trial, trial.run_dir, resumed=True))
            return  # left RUNNING in the study: resume=auto continues it
        value = record.sweep_value(data)
        state = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(status, TrialState.FAIL)
        if state == TrialState.COMPLETE and abs(value) == float("inf"):
            state, status = TrialState.FAIL, "failed"
        try:
            trial.trial.set_user_attr("status", status)
            self.study.tell(trial.trial, value if state == TrialState.COMPLETE else None, state=state)
        except Exception as e:  # noqa: BLE001 - failed meanwhile by another worker (its heartbeat went stale)
            warn(f"trial {trial.number} ({status}) was already ended in the study: {e}")
            return
        if status == "killed":
            self.retry(trial.number)

    def retry(self, number: int) -> None:
        """A killed trial's parameters, once more, for whichever worker asks next."""
        import optuna

        frozen = next(t for t in self.study.get_trials(deepcopy=True) if t.number == number)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(self.study, frozen)


def if_killed(trial) -> str:
    """What becomes of a trial killed (SIGKILL, out of memory), as its record
    says it: the search tries its parameters again once (Runner.retry), and
    not the retry itself (RetryHeartbeatStaleTrialCallback, max_retry=1)."""
    retry_of = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
    if retry_of is None:
        return "the search tries its parameters again, once, as a new trial"
    return f"not tried again: it was the search's retry of trial {retry_of}"


def resumable(study, sweep_dir: Path) -> list[Trial]:
    """Trials of this sweep folder the study holds as running, that no
    process is running (the search was stopped): continued in their folders."""
    import optuna

    out = []
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        folder = Path(frozen.user_attrs.get("dir") or "")
        if folder.parent != Path(sweep_dir).resolve():
            continue
        try:
            with RunFolder(folder).locked():
                pass
        except UserError:
            continue  # a process is training in it
        out.append(Trial(optuna.trial.Trial(study, frozen._trial_id), folder, resumed=True))
    return out


class _Heartbeats:
    """A database storage's heartbeats for the trials running here, while
    their processes live: a lost machine's trials go silent, and another
    worker fails them and tries them again."""

    def __init__(self, runner: Runner, storage, interval: int):
        self.runner, self.storage, self.interval = runner, storage, max(1, int(interval))
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="trainer-heartbeats")
        self.thread.start()

    def _beat(self) -> None:
        while True:
            for trial in list(self.runner.running) + list(self.runner.to_resume):
                # Its exit status as the main thread last saw it: a forked job's is read from
                # the template's socket, which this thread must not read at the same time.
                if trial.process is None or trial.process.returncode is None:
                    try:
                        self.storage.record_heartbeat(trial.trial._trial_id)
                    except Exception:  # noqa: BLE001 - a finished trial, or the server away for a moment
                        pass
            if self.done.wait(self.interval):
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
