"""A sweep's plan, the leaf its readers share: the file that lists the jobs
(`sweep.json`), how a job's folder is named (`3_optimizer=rmsprop`) and read
back, and when two jobs are the same point (`seed=0` twice, `lr=1e-3` and
`lr=0.001`)."""
from __future__ import annotations

import hashlib
import re

from trainer.core import display

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


def point(overrides) -> dict:
    """A job's point as values that compare equal when they mean the same
    (lr=1e-3 and lr=0.001; a key set twice: its last value)."""
    out = {}
    for item in overrides or []:
        key, eq, value = str(item).partition("=")
        if eq:
            out[key.lstrip("+~")] = _same_value(value)
    return out


def _same_value(text: str):
    try:
        return float(text)
    except ValueError:
        return " ".join(text.split()).replace(", ", ",")


def duplicate_points(jobs: list[list[str]]) -> list[tuple[int, int]]:
    """(first, again) job numbers of every job whose point an earlier job has already."""
    seen: dict[tuple, int] = {}
    out = []
    for num, overrides in enumerate(jobs):
        key = tuple(sorted(point(overrides).items(), key=lambda kv: kv[0]))
        if key in seen:
            out.append((seen[key], num))
        else:
            seen[key] = num
    return out


def duplicates_error(jobs: list[list[str]]) -> str | None:
    """'the sweep lists the same point twice: job 1 (seed=0) is job 0 (seed=0); ...' or None."""
    found = duplicate_points(jobs)
    if not found:
        return None
    first, again = found[0]
    differ = [o for o in jobs[again] if o not in jobs[first]]
    same = f" ({' '.join(differ)} is {' '.join(o for o in jobs[first] if o not in jobs[again])})" if differ else ""
    more = f", and {display.plural(len(found) - 1, 'more duplicate')}" if len(found) > 1 else ""
    common = set.intersection(*(set(job) for job in jobs))  # epochs=1 in every job tells none apart
    shown = " ".join(o for o in jobs[again] if o not in common) or "(defaults)"
    return (f"the sweep lists the same point twice: job {again} ({shown}) is job {first}{same}{more}; "
            "list each value once (every job would train the same run again)")
