"""A sweep's plan, the leaf its readers share: the file that lists the jobs
(`sweep.json`), how run, sweep and job folders are named
(`runs/model=conv-<date>_<time>_<random>`, `sweeps/lr+optimizer-<date>_...`,
`3_optimizer=rmsprop`) and read back, and when two jobs are the same point
(`seed=0` twice, `lr=1e-3` and `lr=0.001`).

Names say what varies first: TensorBoard names a run by its folder under
--logdir and shows the first 14-17 characters of it (an HParams Trial ID
column is 10em wide, an image card's run label at most 120 px), so the date
and the random suffix, which only keep names apart, come last."""
from __future__ import annotations

import hashlib
import re

from trainer.core import display

PLAN = "sweep.json"
# Where things are, not what a job is: never part of a job's folder name.
NOT_IN_NAMES = ("data.root", "data.search_paths", "resume", "threads", "device")
MAX_NAME = 80
# A run's or a sweep's name before its date: whole items, and short enough that
# `runs/<it>-` fits one line of TensorBoard's run list (some 37 characters;
# a line breaks at a hyphen, not at a comma).
MAX_LEAD = 32
_ITEM = re.compile(r",(?=[\w.+~/-]+=)")  # a comma between key=value items (a list value has commas of its own)


def elsewhere(key: str) -> bool:
    """Where things are or how they are logged (data.root, tracking.*), not what a run is."""
    key = key.lstrip("+~")
    return key in NOT_IN_NAMES or key.startswith(("tracking.", "hydra."))


def what_varies(dirname: str) -> str:
    """`lr=0.001,optimizer=sgd` from Hydra's override_dirname, at most
    MAX_NAME characters (a hash of the rest keeps it unique)."""
    return _capped(",".join(_items(dirname)), MAX_NAME)


def _items(dirname: str, leave_out=lambda key: False) -> list[str]:
    """The key=value items: numbers rounded, the last value of a key set twice
    (the one Hydra applied), no key `leave_out` names, no characters a folder
    name should not hold (`/` in a value)."""
    items = {item.split("=", 1)[0]: item for item in _ITEM.split(str(dirname or "")) if item}
    kept = [item for key, item in items.items() if not leave_out(key)]
    rounded = (re.sub(r"(?<==)-?\d+\.\d+(?:e-?\d+)?", lambda m: display.value(float(m.group(0))), i) for i in kept)
    return [re.sub(r"[^\w.,=+\-\[\]]", "_", item) for item in rounded]


def _capped(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit - 9]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _lead(items: list[str], sep: str = ",") -> str:
    """The items, or as many whole ones as fit in MAX_LEAD characters with
    `_and_2_more` after them (the date and random suffix after it keep the
    name unique; a single item too long is cut, with a hash of it)."""
    text = sep.join(items)
    if len(text) <= MAX_LEAD:
        return text
    shown: list[str] = []
    for item in items:
        if len(sep.join([*shown, item])) > MAX_LEAD - len("_and_99_more"):
            break
        shown.append(item)
    if not shown:
        return _capped(text, MAX_LEAD)
    return f"{sep.join(shown)}_and_{len(items) - len(shown)}_more"


def job_dir_name(num, dirname: str = "") -> str:
    """`3_optimizer=rmsprop`: the job number, then what varies."""
    text = what_varies(dirname)
    return f"{num}_{text}" if text else str(num)


_STAMP = re.compile(r"-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}$")  # a run folder's `-<date>_<time>_<random>`


def name_says(folder_name: str, override: str) -> bool:
    """Whether a job's or run's folder name states `override` whole, as its
    name would write it (`3_lr=0.01,optimizer=adam`; a run's
    `model=conv,lr=0.01-<date>_<time>_<random>`, not the items behind its `_and_2_more`)."""
    lead = re.sub(r"_and_\d+_more$", "", re.sub(r"^\d+_", "", _STAMP.sub("", folder_name)))
    written = _items(override)
    return len(written) == 1 and written[0] in _ITEM.split(lead)


def planned_job_name(num, overrides, varies) -> str:
    """The folder a planned job gets (`3_optimizer=rmsprop`), from the plan
    alone: the name Hydra makes of its override_dirname (the job's overrides
    of the keys the sweep varies, where things are left out, sorted as
    Hydra sorts them) through job_dir_name. A job that never started is
    then named as it will be once it runs."""
    varying = {str(key) for key in varies or []} - set(NOT_IN_NAMES)
    lines = sorted(str(o) for o in overrides or [] if override_key(str(o)) in varying)
    return job_dir_name(num, ",".join(lines))


def override_key(override: str) -> str:
    """The key (or config group) an override sets: `+model.hidden=[64]` -> model.hidden, `optimizer@opt=adam` -> optimizer."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def run_dir_name(overrides, stamp: str, unique: str) -> str:
    """`model=conv,lr=0.01-2026-12-05_11-02-56_3831f0`: what the run's
    overrides change, in the order they were typed (what a person types first
    is what the run is about), then when it started and a random suffix (two
    runs started in the same second never share a folder); `defaults-...`
    for a run that changes nothing (or only where things are: data.root,
    tracking.*)."""
    items = _items(",".join(str(o) for o in overrides or []), leave_out=elsewhere)
    return f"{_lead(items) or 'defaults'}-{stamp}_{unique}"


def sweep_dir_name(varies, stamp: str, unique: str) -> str:
    """`lr+optimizer-2026-12-05_11-02-26_a1f159`: the keys the sweep varies,
    then the date and a random suffix. `+`, not a comma: the folder is typed
    back as `hydra.sweep.dir=...` (resume=auto), where a comma would make it
    a sweep of two folders."""
    keys = _lead([re.sub(r"[^\w.\-]", "_", key) for key in sorted(varies)], sep="+")
    return f"{keys}-{stamp}_{unique}" if keys else f"{stamp}_{unique}"


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
    # Every job alike (lr=1e-3,0.001 is one point twice): its whole point names it.
    point = [o for o in jobs[again] if not elsewhere(o.split("=", 1)[0].lstrip("+~"))]
    shown = " ".join(o for o in point if o not in common) or " ".join(point) or "(defaults)"
    return (f"the sweep lists the same point twice: job {again} ({shown}) is job {first}{same}{more}; "
            "list each value once (every job would train the same run again)")
