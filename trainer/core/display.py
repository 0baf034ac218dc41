"""How numbers read on the console and in tables, in one place: accuracy
always as a percentage, losses to 4 significant digits, seconds to 0.1,
whole numbers as whole numbers, plurals that agree, and the label a
parallel sweep's job puts before its console lines."""
from __future__ import annotations

import math
import os

# Set by the launcher for each job of a parallel sweep (its folder name, `3_optimizer=rmsprop`):
# the job's console lines, stdout and stderr, carry it, so interleaved jobs read job by job.
JOB_LABEL = "TRAINER_JOB_LABEL"


def metric(key: str, value) -> str:
    """A metric by its name: `*acc` as a percentage, other floats to 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if key.endswith("acc"):
        return f"{100 * value:.2f}%"
    if key.endswith("seconds"):
        return duration(value)
    if isinstance(value, int) or (key in ("epoch", "epochs", "best_epoch", "step", "samples") and value == int(value)):
        return str(int(value))
    return significant(value)


def significant(value: float, digits: int = 4) -> str:
    """0.3749, 1.899, 5.720e+20: `digits` significant digits, no float noise."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e6 or abs(value) < 1e-4:
        return f"{value:.{digits - 1}e}"
    return f"{value:#.{digits}g}".rstrip(".")  # '#': 2.300, not 2.3


def duration(seconds: float) -> str:
    """12.3s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 job', '2 jobs', '1 process', '3 processes'."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def value(v) -> str:
    """A config value as a user types it: 5000 not 5000.0, 0.001184 not 0.0011842729505689438."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(value(x) for x in v) + "]"
    return str(v)


def typed(v) -> str:
    """A config value exactly as a user types it, nothing rounded (an error
    names the value given): 5000 not 5000.0, true not True, [64,32]."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(typed(x) for x in v) + "]"
    return str(v)


def override(text: str) -> str:
    """`key=value` with a number shown as `value()` shows it (lr=0.001184, val_split=5000)."""
    key, eq, raw = text.partition("=")
    try:
        number = float(raw)
    except ValueError:
        return text
    return f"{key}={value(number)}" if eq and math.isfinite(number) else text


def labelled(text: str) -> str:
    """`text` with this job's label before each line, where a parallel sweep gave it one."""
    label = os.environ.get(JOB_LABEL)
    if not label:
        return text
    return "\n".join(f"[{label}] {line}" for line in text.split("\n"))
