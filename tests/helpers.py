"""Running the real CLI in tests: composed in-process with hydra.compose (like
lightning-hydra-template), or as a subprocess exactly as a user types it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cli_template
import fault_child
from trainer.cli import api
from trainer.core.process import die_with_parent
from trainer.sweeps import forkserver, launcher

from trainer.core import runtime
from trainer.runs.build import make_parts, plan_capture
from trainer.core.config import validate

# Small, fast, offline: the synthetic data root, no checksum (synthetic files
# are not the real ones), no download, no local copies.
TINY = ["epochs=1", "batch_size=32", "train.log_every_n_steps=4", "train.eval_batch_size=256",
        "data.verify=false", "data.download=false", "data.search_paths=[]",
        "tracking.images_every_n_epochs=0", "tracking.histograms_every_n_epochs=0", "tracking.graph=false"]


def tiny(root: Path, *overrides: str) -> list[str]:
    return [f"data.root={root}", *TINY, *overrides]


def compose_cfg(overrides: list[str]):
    """The typed config the CLI would run (trainer.cli.api.compose: the same tree)."""
    return api.compose(*overrides)


def check_before_data(config) -> None:
    """What a run checks before it touches data: the values, the device, and
    the model, loss, transform and optimizer constructors (trainer.runs.build)."""
    validate(config)
    device = runtime.pick_device(config.device)
    graph, _ = plan_capture(config, device, world=1)
    make_parts(config, device, for_graph=graph)


def names_key(message: str, key: str) -> bool:
    """Whether `message` names `key` as a key (not as part of another word)."""
    import re

    return re.search(rf"(^|[\s'\"(]){re.escape(key)}($|[\s'\"=.,;:)\]])", message) is not None


def start_cli(args: list[str], cwd: Path, env: dict | None = None, fault: dict | None = None,
              stdout: Path | None = None) -> "CliProcess":
    """`python -m trainer ARGS` in `cwd` in the background, a process of its
    own (outputs under cwd/outputs), with `fault` patched in (tests/fault_child.py).
    Forked from a warm template (tests/cli_template.py): a test pays
    milliseconds per command, not seconds of imports. TRAINER_TEST_PLAIN=1
    starts the plain command line instead. `stdout`: the file (or pipe) its
    standard output goes to, instead of one the test reads back."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    if fault is not None:
        full_env[fault_child.FAULT] = json.dumps(fault)
    folder = Path(tempfile.mkdtemp(prefix="trainer-test-"))
    out, err = stdout or folder / "stdout", folder / "stderr"
    if os.environ.get("TRAINER_TEST_PLAIN") == "1":
        program = [str(FAULT_CHILD)] if fault is not None else ["-m", "trainer"]
        with open(out, "w") as stdout, open(err, "w") as stderr:
            job = subprocess.Popen([sys.executable, *program, *args], cwd=cwd, env=full_env, stdout=stdout,
                                   stderr=stderr, stdin=subprocess.DEVNULL)
    else:
        job = WARM.start([launcher.TRAINER_MAIN, *args], cwd, {**full_env, cli_template.STDOUT: str(out),
                                                                 cli_template.STDERR: str(err)})
    return CliProcess(["trainer", *args], job, folder)


def run_cli(args: list[str], cwd: Path, timeout: float = 240, env: dict | None = None,
            check: bool = False, fault: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` in `cwd` to its end (start_cli)."""
    proc = start_cli(args, cwd, env, fault).finish(timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_cli_into_head(args: list[str], cwd: Path, lines: int = 3,
                      timeout: float = 240) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`trainer ARGS | head -LINES`: its stdout is a pipe whose reader takes
    the first LINES lines and goes away. Returns the command's end (stdout
    empty: it went to the pipe) and the lines the reader took."""
    fifo = Path(tempfile.mkdtemp(prefix="trainer-pipe-")) / "stdout"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # before the writer, whose open then does not wait
    proc = start_cli(args, cwd, stdout=fifo)
    taken = b""
    try:
        deadline = time.monotonic() + timeout
        while taken.count(b"\n") < lines and proc.poll() is None and time.monotonic() < deadline:
            try:
                chunk = os.read(reader, 65536)
            except BlockingIOError:  # the writer has said nothing new yet
                chunk = b""
            taken += chunk
            if not chunk:
                time.sleep(0.01)
    finally:
        os.close(reader)  # as head exits: the writer's next write meets a closed pipe
    done = proc.finish(timeout)
    shutil.rmtree(fifo.parent, ignore_errors=True)
    return done, taken.decode(errors="replace").splitlines()[:lines]


class CliProcess:
    """A `trainer` command running in the background, asked like a
    subprocess.Popen; its output goes to files (a long run's lines would fill
    a pipe nobody reads yet and stall it)."""

    def __init__(self, args: list[str], job, folder: Path):
        self.args, self.job, self.folder = args, job, folder
        self.pid = job.pid
        self.read = 0  # how much of stderr readline() has returned

    @property
    def returncode(self) -> int | None:
        return self.job.returncode

    def poll(self) -> int | None:
        with WARM.lock:
            return self.job.poll()

    def wait(self, timeout: float = 240) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        while self.poll() is None:
            time.sleep(0.01)

    def output(self) -> tuple[str, str]:
        return tuple(_text(self.folder / name) for name in ("stdout", "stderr"))

    def readline(self) -> str:
        """The next whole line of stderr; "" once the process has ended without one."""
        while True:
            rest = _text(self.folder / "stderr")[self.read:]
            if "\n" in rest:
                line = rest[:rest.index("\n") + 1]
                self.read += len(line)
                return line
            if self.poll() is not None:
                return ""
            time.sleep(0.01)

    def finish(self, timeout: float = 240) -> subprocess.CompletedProcess:
        self.wait(timeout)
        out, err = self.output()
        shutil.rmtree(self.folder, ignore_errors=True)
        return subprocess.CompletedProcess(self.args, self.returncode, out, err)


class WarmTrainer:
    """This test process's template (one per pytest worker, started on first
    use), and the lock that keeps two threads of side_by_side off its socket
    at once."""

    def __init__(self):
        self.template: forkserver.Template | None = None
        self.lock = threading.Lock()

    def ready(self) -> None:
        with self.lock:
            self._template()

    def start(self, argv: list[str], cwd: Path, env: dict) -> forkserver.ForkedJob:
        threads = int(env["OMP_NUM_THREADS"]) if env.get("OMP_NUM_THREADS", "").isdigit() else 1
        with self.lock:
            title = " ".join([sys.executable, "-m", "trainer", *argv[1:]])  # what `ps` shows for the command line
            return self._template().start(argv, env, str(cwd), threads, title, None)

    def _template(self) -> forkserver.Template:
        """Started by the main thread (conftest's session fixture): the template
        dies with the thread that started it (PR_SET_PDEATHSIG is per thread),
        and side_by_side's threads end after each test."""
        if self.template is None or not self.template.alive():
            ours, theirs = socket.socketpair()
            process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_template.py")),
                                        str(theirs.fileno())], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                       preexec_fn=lambda: die_with_parent(signal.SIGKILL))
            theirs.close()
            self.template = forkserver.Template(ours, process.pid, process)
        return self.template


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


WARM = WarmTrainer()
FAULT_CHILD = Path(__file__).resolve().with_name("fault_child.py")


def run_dirs(base: Path) -> list[Path]:
    return sorted(p.parent for p in (base / "outputs").rglob("metrics.json"))


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def side_by_side(func, items) -> list:
    """[func(item) for item in items], two at a time: each CLI run is mostly
    importing torch, which one core does alone."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(func, items))


def run_all(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    return side_by_side(lambda args: run_cli(args, cwd=cwd), commands)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Exit non-zero, exactly one non-empty stderr line, no traceback anywhere; return the line."""
    assert proc.returncode not in (0, None), proc.stdout[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def patch_bytes(path: Path, offset: int, payload: bytes) -> None:
    """Overwrite part of a file in place (a corrupt data file, same size)."""
    data = bytearray(path.read_bytes())
    data[offset:offset + len(payload)] = payload
    path.write_bytes(bytes(data))


def hparams_plugin_data(ea) -> dict:
    """{'experiment' | 'session_start_info' | 'session_end_info': message} from
    the hparams plugin of a loaded EventAccumulator."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = {}
    for content in ea.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        kind = data.WhichOneof("data")
        out[kind] = getattr(data, kind)
    return out


def snapshot(folder: Path) -> dict[str, tuple[int, str, int]]:
    """Every file under `folder`: {relative path: (size, sha256, mtime_ns)},
    to assert that a failed command changed nothing."""
    import hashlib

    out = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            st = path.stat()
            out[path.relative_to(folder).as_posix()] = (st.st_size, hashlib.sha256(path.read_bytes()).hexdigest(),
                                                        st.st_mtime_ns)
    return out


def call_main(main, capsys, *args) -> tuple[int, str, str]:
    """A command's main() in-process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args]) or 0  # console scripts exit with what main returns
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
