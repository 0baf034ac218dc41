"""Warm job processes: a template process that has imported torch, Hydra and
trainer, and decoded the sweep's datasets, forks one fresh process per sweep
job. A job starts in a fraction of a second instead of paying seconds of
imports and data loading, and is still a process of its own: one killed by
the OOM killer fails alone, its exit code and signals are its own.

    sweep process ──socket──> template (imported, Hydra composed once and left
                                 │          uninitialised, no CUDA)
                                 ├── fork: job 0  (runs `trainer <its overrides>`)
                                 └── fork: job 1

The jobs are those of trainer's process launcher and the trials of its
Optuna sweeper (both started by trainer.sweeps.launcher.JobRunner).

The template is forked from the sweep process itself at its very start,
before Hydra is initialised (`fork_early`, called by the `trainer` command),
or else started as `python -m trainer.cli.template` (`spawn`). It never
touches CUDA: a forked CUDA context is unusable, so each job initialises its
own. It lives in a session of its own (a Ctrl-C in the terminal reaches the
sweep alone, which passes it on to the jobs) and dies with the sweep.

Messages are JSON lines: the sweep sends {"preload": dataset} (read it now)
and {"job": id, "argv", "env", "cwd", "threads", "title", "data"}; the template answers {"job": id, "pid"} when it
forked, {"job": id, "freed": true} when the job's results are known and
only its last files are left to write (its core is free for the next job:
trainer.core.process.release_slot, through a pipe of its own), and
{"job": id, "returncode"} when the job ended (negative: the signal that
killed it, as subprocess.Popen reports it).
"""
from __future__ import annotations

import atexit
import importlib
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console

try:  # optional (the `sweep` extra): without it `ps` shows each job with the template's command line
    import setproctitle
except ImportError:
    setproctitle = None

from trainer.core import data, process, streams
from trainer.core.process import die_with_parent
from trainer.report import figures

TEMPLATE_COMMAND = [sys.executable, "-m", "trainer.cli.template"]
# What a job imports lazily, imported once by the template so that each forked
# job finds it in place (tests/test_warm_jobs.py checks that a job imports
# nothing more): TensorBoard's writer and its HParams protos, torch.save's,
# matplotlib (for curves.png), rich's tables, the loss module, Hydra's logging,
# Optuna (a search's trial reports its epochs to the study), the Optuna
# sweeper and submitit plugins Hydra's discovery imports. Not torchvision:
# only model=torchvision and pipeline=loader jobs use it, and its seconds of
# import would delay every sweep's first job.
WARM_MODULES = ("torch.utils.tensorboard", "tensorboard.plugins.hparams.api_pb2",
                "tensorboard.plugins.hparams.plugin_data_pb2", "tensorboard.plugins.hparams.metadata",
                "torch.utils.serialization", "matplotlib.figure",
                "matplotlib.backends.backend_agg", "rich.table", "optuna", "trainer.core.losses",
                "hydra._internal.logging_config", "hydra_plugins.trainer_optuna_sweeper.optuna_sweeper",
                "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
                "hydra._internal.core_plugins.basic_launcher", "hydra._internal.core_plugins.basic_sweeper")
_LAUNCHER_CHOICES = ("hydra/launcher=joblib", "hydra/launcher=local")
# trainer's Optuna sweeper, chosen by its preset or by name: its trials are warm jobs too.
_SEARCH_CHOICES = ("hparams_search=optuna", "hydra/sweeper=trainer_optuna")

_early: "Template | None" = None


def wanted(argv: list[str]) -> bool:
    """Whether a `trainer` command line is a sweep with warm jobs, so that its
    template can be forked before Hydra starts: an Optuna search
    (hydra.sweeper.warm=false: plain processes), else a sweep on trainer's
    process launcher (hydra.launcher.warm=false: plain processes). A search
    runs its trials itself, whatever launcher is named."""
    if "-m" not in argv and "--multirun" not in argv:
        return False
    if any(a in _SEARCH_CHOICES for a in argv):
        return "hydra.sweeper.warm=false" not in argv
    return any(a in _LAUNCHER_CHOICES for a in argv) and "hydra.launcher.warm=false" not in argv


def cuda_untouched() -> bool:
    """A template must not have initialised CUDA: a child cannot use a forked context."""
    return not torch.cuda.is_initialized()


# ------------------------------------------------------------ sweep side
class Template:
    """The sweep's handle on its template process."""

    def __init__(self, sock: socket.socket, pid: int, process: subprocess.Popen | None = None):
        self.sock, self.pid, self.process = sock, pid, process
        self.buffer = b""
        self.pids: dict[int, int] = {}         # job id -> pid
        self.returncodes: dict[int, int] = {}  # job id -> exit status
        self.freed: set[int] = set()           # jobs that said their core is free (process.release_slot)
        self.next_id = 0

    @classmethod
    def spawn(cls) -> "Template":
        """A template in a fresh process (when none was forked early)."""
        ours, theirs = socket.socketpair()
        process = subprocess.Popen([*TEMPLATE_COMMAND, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                   start_new_session=True, preexec_fn=lambda: die_with_parent(signal.SIGKILL))
        theirs.close()
        return cls(ours, process.pid, process)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def preload(self, dataset: dict) -> None:
        """Have the template read a dataset now, while the sweep gets its jobs ready."""
        self._send({"preload": dataset})

    def start(self, argv: list[str], env: dict[str, str], cwd: str, threads: int, title: str,
              dataset: dict | None) -> "ForkedJob":
        job_id, self.next_id = self.next_id, self.next_id + 1
        self._send({"job": job_id, "argv": argv, "env": env, "cwd": cwd, "threads": threads, "title": title,
                    "data": dataset})
        while job_id not in self.pids and job_id not in self.returncodes:
            self._receive(timeout=1.0)
        return ForkedJob(self, job_id)

    def _send(self, message: dict) -> None:
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as e:
            raise TemplateGone(f"the sweep's template process is gone ({e.strerror})") from e

    def _receive(self, timeout: float) -> None:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            if not self.alive():
                raise TemplateGone("the sweep's template process died")
            return
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise TemplateGone("the sweep's template process closed its socket")
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "pid" in message:
                self.pids[message["job"]] = message["pid"]
            if "returncode" in message:
                self.returncodes[message["job"]] = message["returncode"]
            if "freed" in message:
                self.freed.add(message["job"])

    def poll(self) -> None:
        self._receive(timeout=0)


class TemplateGone(RuntimeError):
    """The template process died (killed from outside): jobs not yet started
    are started as plain processes instead."""


class ForkedJob:
    """A job forked by the template, asked like a subprocess.Popen."""

    def __init__(self, template: Template, job_id: int):
        self.template, self.job_id = template, job_id
        self.pid = template.pids.get(job_id)

    @property
    def returncode(self) -> int | None:
        return self.template.returncodes.get(self.job_id)

    def holds_slot(self) -> bool:
        """Whether it still needs its core: not once it said its results are
        known (it is writing its last files) or it ended."""
        return self.job_id not in self.template.freed and self.returncode is None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.template.poll()
            except TemplateGone:  # the job went with it (its parent-death signal): SIGTERM
                self.template.returncodes.setdefault(self.job_id, -signal.SIGTERM)
        return self.returncode


def fork_early(entry: Callable[[], None], warm_up: Callable[[], None] | None = None) -> None:
    """Fork the template from this process now, before Hydra is initialised;
    `early()` hands it to the sweep's launcher. The child never returns.
    `warm_up`: what the command line's layer pays once for every job (Hydra's first compose)."""
    global _early
    if not cuda_untouched() or threading.active_count() > 1:
        return  # forking now would copy a CUDA context or a half-held lock: spawn one later instead
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        os.setsid()
        serve(theirs.detach(), entry, warm_up)
    theirs.close()
    _early = Template(ours, pid)


def early() -> Template | None:
    """The template forked at this process's start, once (None when there is none)."""
    global _early
    template, _early = _early, None
    return template if template is not None and template.alive() else None


# ---------------------------------------------------------- template side
def serve(fd: int, entry: Callable[[], None], warm_up: Callable[[], None] | None = None) -> None:
    """The template's loop: fork a job per request, report each job's end.
    Exits when the sweep closes the socket or dies."""
    die_with_parent(signal.SIGKILL)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    sock = socket.socket(fileno=fd)
    # Should anything here ask torch.cuda.is_available(), it asks NVML: the
    # CUDA runtime's own count would make CUDA unusable in every forked job.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    # One thread: torch's OpenMP pool must not exist when a job is forked (a
    # forked pool deadlocks); each job sets its own number of threads.
    torch.set_num_threads(1)
    _warm_up()
    if warm_up is not None:
        warm_up()
    buffer = b""
    while True:
        ready, _, _ = select.select([sock, *_slot_pipes], [], [], 0.05)
        for fd in set(ready) & set(_slot_pipes):
            _slot_freed(sock, fd)
        if sock in ready:
            chunk = sock.recv(1 << 16)
            if not chunk:
                os._exit(0)  # the sweep has gone: its jobs get SIGTERM from their parent-death signal
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                if "preload" in request:
                    data.preload(**request["preload"])
                else:
                    _reply(sock, {"job": request["job"], "pid": _fork_job(request, sock, entry)})
        _reap(sock)


def _warm_up() -> None:
    """Pay once what every job would pay: the imports it makes on first use
    (its first optimizer's too), matplotlib's first drawing (fonts, the
    renderer) for curves.png, and the first trace of a model for
    TensorBoard's graph (seconds, then 0.1 s)."""
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional plugin that is not installed
            pass
    figures.warm_up()
    Console(file=io.StringIO()).print("warm-up")  # rich's first line loads its emoji table
    # A job's first optimizer imports torch._dynamo (optimizers are wrapped for torch.compile): 0.7 s of
    # every job's start-up on a 2-core EPYC (bench/run.py sweep), paid here once.
    torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    try:
        # What SummaryWriter.add_graph runs, without a writer (whose thread must not exist at a fork).
        from torch.utils.tensorboard._pytorch_graph import graph

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), torch.zeros(1, 2, 2))
    except Exception:  # noqa: BLE001 - a private helper of torch's: without it the first graph is slower
        pass


_pid_to_job: dict[int, int] = {}
_slot_pipes: dict[int, int] = {}  # read end of a job's slot pipe -> job id


def _fork_job(request: dict, sock: socket.socket, entry: Callable[[], None]) -> int:
    if request.get("data"):
        data.preload(**request["data"])  # once per dataset: the jobs share the decoded tensors
    template = os.getpid()
    slot_read, slot_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:  # the child never returns into the template's loop
            _forget_other_jobs(slot_read)
            code = _run_job(request, sock, template, entry, slot_write)
        except BaseException:  # noqa: BLE001 - said, and the job fails alone
            traceback.print_exc()
            code = 1
        os._exit(code)
    os.close(slot_write)
    _pid_to_job[pid] = request["job"]
    _slot_pipes[slot_read] = request["job"]
    return pid


def _forget_other_jobs(slot_read: int) -> None:
    """In a forked job: the template's pipes and children are not its own (a
    job may be a sweep with a template of its own, which starts with none)."""
    for fd in [slot_read, *_slot_pipes]:
        os.close(fd)
    _slot_pipes.clear()
    _pid_to_job.clear()


def _slot_freed(sock: socket.socket, fd: int) -> None:
    """A job wrote to its slot pipe (process.release_slot), or ended: its core is free."""
    os.read(fd, 1)
    os.close(fd)
    _reply(sock, {"job": _slot_pipes.pop(fd), "freed": True})


def _reap(sock: socket.socket) -> None:
    while _pid_to_job:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        job = _pid_to_job.pop(pid, None)
        if job is not None:
            _reply(sock, {"job": job, "returncode": os.waitstatus_to_exitcode(status)})


def _reply(sock: socket.socket, message: dict) -> None:
    try:
        sock.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        os._exit(0)  # the sweep has gone


# --------------------------------------------------------------- the job
def _run_job(request: dict, sock: socket.socket, template: int, entry: Callable[[], None], slot: int) -> int:
    """In the forked child: become `python -m trainer <argv>` and run it.
    Returns its exit status; a death by signal re-raises the signal."""
    sock.close()
    os.setsid()  # as start_new_session: the terminal's Ctrl-C reaches the sweep alone
    die_with_parent(signal.SIGTERM)
    if os.getppid() != template:  # the template died between fork and prctl
        return 128 + signal.SIGTERM
    for signum in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as Python sets it at start
    # The title before the environment changes: setproctitle finds the memory
    # of the command line through the process's original environment.
    _set_title(request["title"])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    process.slot_fd = slot
    torch.set_num_threads(request["threads"])  # what OMP_NUM_THREADS would have set in a fresh process
    _fresh_random_state()
    sys.argv = list(request["argv"])
    return _exit_status(entry)


def _exit_status(entry: Callable[[], None]) -> int:
    """Run `entry` as the interpreter runs a script, to the exit status."""
    try:
        entry()
        code: Any = 0
    except SystemExit as e:
        code = e.code
    except KeyboardInterrupt:
        traceback.print_exc()
        _finish_interpreter()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as Python does: the job dies by SIGINT
        code = 130
    except BaseException:  # noqa: BLE001 - what the interpreter would print and exit 1 for
        traceback.print_exc()
        code = 1
    if code is not None and not isinstance(code, int):
        streams.write(str(code), sys.stderr)
        code = 1
    _finish_interpreter()
    return code or 0


def _finish_interpreter() -> None:
    """What interpreter exit does before the process ends: wait for
    non-daemon threads, run atexit handlers, flush the console."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _fresh_random_state() -> None:
    """A fresh process seeds numpy from the OS; a forked one would share the
    template's stream (Python's `random` reseeds itself after a fork)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(None)


def _set_title(title: str) -> None:
    """`ps` shows the job as its plain command line would."""
    if setproctitle is not None:
        setproctitle.setproctitle(title)
