"""A sweep's plan, the leaf its readers share: the file that lists the jobs
(`sweep.json`), how a job's folder is named (`3_optimizer=rmsprop`) and read
back, and what the sweep varies."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from trainer.core import display
from trainer.core.files import read_text

PLAN = "sweep.json"
# Where things are, not what a job is: never part of a job's folder name.
NOT_IN_NAMES = ("data.root", "data.search_paths", "resume", "threads", "device")
MAX_NAME = 80


def job_dir_name(num, dirname: str = "") -> str:
    """`3_optimizer=rmsprop`: the job number, then what varies (numbers
    rounded, no characters a folder name should not hold, kept short)."""
    # key=value items (a list value has commas of its own); the last of a key is the one Hydra applied
    items = {item.split("=", 1)[0]: item for item in re.split(r",(?=[\w.+~/-]+=)", str(dirname or "")) if item}
    text = ",".join(items.values())
    text = re.sub(r"(?<==)-?\d+\.\d+(?:e-?\d+)?", lambda m: display.value(float(m.group(0))), text)
    text = re.sub(r"[^\w.,=+\-\[\]]", "_", text)
    if len(text) > MAX_NAME:
        text = f"{text[:MAX_NAME - 9]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return f"{num}_{text}" if text else str(num)


def job_number(folder_name: str) -> int | None:
    """The job number a folder's name starts with ('3_optimizer=rmsprop' -> 3)."""
    match = re.match(r"(\d+)(?:_|$)", folder_name)
    return int(match.group(1)) if match else None


def varying_keys(sweep_dir: Path) -> list[str]:
    """What the sweep in `sweep_dir` varies, from its plan ([] if unknown)."""
    try:
        return list(json.loads(read_text(Path(sweep_dir) / PLAN)).get("varies") or [])
    except (OSError, ValueError, AttributeError):
        return []
