"""Running the real CLI in tests: composed in-process with hydra.compose (like
lightning-hydra-template), or as a subprocess exactly as a user types it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trainer.cli import api

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


def run_cli(args: list[str], cwd: Path, timeout: float = 240, env: dict | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` in `cwd`; outputs go under cwd/outputs."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", "trainer", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


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
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
