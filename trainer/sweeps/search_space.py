"""A search's space in Hydra's sweep syntax, as Optuna distributions, and a
trial's values back as command-line overrides.

    lr: tag(log, interval(1e-4, 1e-1))     a float, sampled on a log scale
    epochs: tag(int, interval(2, 10))      an integer in [2, 10]
    batch_size: choice(32, 64, 128)        one of these values
    model.hidden: range(128, 1025, 128)    128, 256, ..., 1024 (the stop is left out, as in a grid sweep)

What the command line sets is fixed for every trial (`lr=1e-3` takes lr out
of the search); a sweep value on the command line (`lr=interval(...)`) joins
the search space.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from trainer.core.errors import UserError


@dataclass
class Space:
    distributions: dict = field(default_factory=dict)   # key -> an Optuna distribution
    fixed: list[str] = field(default_factory=list)       # overrides every trial gets


def parse(params: dict, arguments: list[str]) -> Space:
    """`params` (hydra.sweeper.params) and the command line's overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        searched = parser.parse_overrides([f"{k}={v}" for k, v in _flat(params).items()])
        given = parser.parse_overrides(list(arguments))
    except Exception as e:  # noqa: BLE001 - Hydra's grammar errors come as several classes
        raise UserError(f"hydra.sweeper.params: {str(e).splitlines()[0]}; write each as key: "
                        "choice(a, b) | range(start, stop, step) | interval(low, high) | "
                        "tag(log, interval(low, high))") from e
    space = Space()
    pinned = {o.key_or_group for o in given if not o.is_sweep_override()}
    for override in [*searched, *given]:
        key = override.key_or_group
        if override.is_sweep_override():
            if key not in pinned:
                space.distributions[key] = distribution(key, override)
        elif override in searched and key not in pinned:
            space.fixed.append(override.input_line)
    space.fixed += [o.input_line for o in given if not o.is_sweep_override()]
    return space


def distribution(key: str, override):
    """One sweep value as an Optuna distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep():
        return CategoricalDistribution(list(override.sweep_iterator()))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise UserError(f"hydra.sweeper.params.{key}: {override.input_line.split('=', 1)[1]} holds no value; "
                            "the stop is left out, so make it larger than the start")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return CategoricalDistribution(values)
    low, high, log = value.start, value.end, "log" in value.tags
    if not low < high or (log and low <= 0):
        raise UserError(f"hydra.sweeper.params.{key}: interval({low}, {high}) is empty" +
                        (" or not positive (a log scale needs low > 0)" if log else "") + "; give low < high")
    if "int" in value.tags:
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def overrides(params: dict) -> list[str]:
    """A trial's values as overrides, in the order of its keys."""
    return [f"{key}={_text(value)}" for key, value in sorted(params.items())]


def _text(value) -> str:
    if isinstance(value, str) and not re.fullmatch(r"[\w./+\-:]*", value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value) if isinstance(value, float) else str(value)


def _flat(params: dict, prefix: str = "") -> dict:
    """`hydra.sweeper.params.model.hidden=...` on the command line nests: back to dotted keys."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
