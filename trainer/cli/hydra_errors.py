"""Hydra's composition errors, rewritten as one line that names the key or
value and the valid choices."""
from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from trainer.core import config as schema
from trainer.core.config import GROUPS, PRESET_GROUPS
from trainer.core.errors import first_line

CONF = Path(__file__).resolve().parents[1] / "conf"


def _known_keys() -> list[str]:
    keys: set[str] = set(GROUPS) | set(PRESET_GROUPS)
    for node in (schema.TrainerConfig, *schema.SCHEMAS.values()):
        for f in dataclasses.fields(node):
            keys.add(f.name)
            sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            if dataclasses.is_dataclass(sub):
                keys.update(f"{f.name}.{g.name}" for g in dataclasses.fields(sub))
    return sorted(k for k in keys if not k.startswith("_"))


def suggest(key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    known = _known_keys()
    if parent:
        # A nested key: compare its last part with the field names a group can have.
        leaves = sorted({k.rsplit(".", 1)[-1] for k in known})
        if leaf in leaves:  # a real key, but not of the option chosen for this group
            return f"; the chosen {parent} has no '{leaf}' (run `trainer --cfg job` to see its keys)"
        close = difflib.get_close_matches(leaf, leaves, n=1)
        close = [f"{parent}.{close[0]}"] if close else []
    else:
        close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else "; run `trainer --cfg job` to see every key"


# What a value of each schema type looks like, for the "could not be converted" case.
_EXAMPLES = {"float": "; write a number such as 0.001 or 1e-3", "integer": "; write a whole number such as 64",
             "bool": "; write true or false"}


def describe(e: BaseException, overrides: Sequence[str] = ()) -> str:
    """One line for an error raised while Hydra composes the config (or sets up
    the run folder). `overrides` is the command line: some Hydra errors do not
    say which key they are about, and it lets the line name it anyway."""
    if isinstance(e, OSError) and e.errno is not None:  # not Hydra's MissingConfigException, also an OSError
        # Hydra creates the run folder before any of our code runs.
        return (f"cannot write {e.filename or 'the output folder'}: {e.strerror}; choose a writable output folder "
                "with hydra.run.dir=... (or hydra.sweep.dir=... for -m)")
    text = str(e)
    cause = str(e.__cause__) if e.__cause__ is not None else ""
    for matcher in _MATCHERS:
        line = matcher(e, text, f"{text}\n{cause}", overrides)
        if line:
            return line
    return "; ".join(part for part in (first_line(text), first_line(cause)) if part)


def is_lr_elsewhere(key: str) -> bool:
    """A learning rate set inside a group: optimizer.lr, scheduler.max_lr
    (onecycle's peak is the run's lr), scheduler.lr, ..."""
    group, _, name = key.lstrip("+~").partition(".")
    return bool(group) and name in ("lr", "max_lr", "learning_rate")


def lr_elsewhere(key: str, value: str) -> str:
    """The line for a learning rate set inside a group (see is_lr_elsewhere)."""
    return (f"{key} is not a key: the learning rate is the top-level lr, one value for the optimizer, "
            f"the scheduler (onecycle's peak) and the record; write lr={value}")


def _missing_option(e, text, both, overrides):
    missing = re.search(r"Could not (?:find|load) '([^']+)'", text)
    if not missing:
        return None
    path = missing.group(1).lstrip("/")
    group, _, name = path.rpartition("/")
    options = re.findall(r"^\t(\S+)$", text, flags=re.M)
    if group and options:
        return _not_a_choice(group, name, options)
    return f"config '{path}' does not exist; check the spelling of the group and option"


def _unknown_key(e, text, both, overrides):
    struct = re.search(r"Key '([^']+)' (?:is )?not in (?:struct|'\w+')", both)
    if not struct:
        return None
    full_key = re.search(r"full_key: (\S+)", both)
    key = full_key.group(1) if full_key else struct.group(1)
    if is_lr_elsewhere(key):
        value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").startswith(f"{key}=")), "...")
        return lr_elsewhere(key, value)
    # `x.y=1` with no `x`: name what was typed too, not only the part that is unknown.
    typed = re.search(r"Could not override '([^']+)'", text)
    within = f" (in '{typed.group(1)}')" if typed and typed.group(1) != key else ""
    return f"unknown config key '{key}'{within}{suggest(key)}"


def _bad_value(e, text, both, overrides):
    full_key = re.search(r"full_key: (\S+)", both)
    key = full_key.group(1) if full_key else "a key"
    convert = (re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", both)
               or re.search(r"Value '([^']*)' is not a valid (\w+)", both))
    if convert:
        kind = convert.group(2).lower()
        return f"{key}={convert.group(1)} is not a valid {kind} value{_EXAMPLES.get(kind, '')}"
    invalid = re.search(r"Invalid value '([^']*)', expected one of \[([^\]]*)\]", both)
    if invalid:
        return f"{key}={invalid.group(1)} is not valid; choose one of: {invalid.group(2)}"
    wrong_type = re.search(r"Invalid type assigned: (\S+) is not a subclass of (\S+)", both)
    if wrong_type:
        return f"{key} must be a {wrong_type.group(2)}, not a {wrong_type.group(1)}"
    not_list = re.search(r"Error merging override (\S+?)=(\S*).*is not a ListConfig", both, flags=re.S)
    if not_list:
        return f"{not_list.group(1)}={not_list.group(2)} is not a list; write it like {not_list.group(1)}=[256,128]"
    return None


def _syntax(e, text, both, overrides):
    parsed = getattr(e, "override", None)  # hydra's OverrideParseException
    if isinstance(parsed, str):
        reasons = [line.strip() for line in text.splitlines()
                   if line.strip() and not line.strip().startswith(("Error parsing override", "See https", "^"))]
        reason = reasons[0] if reasons else "syntax error"
        if reason.startswith("LexerNoViableAltException"):
            reason = "a character the override syntax does not allow"
        return (f"could not parse the override '{parsed}': {reason}; write overrides as key=value "
                "(quote a value with special characters: key='...')")
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        cause = str(e.__cause__) if e.__cause__ is not None else ""
        reason = first_line(cause) or first_line(text.split("\n", 1)[-1])
        return f"could not set '{override.group(1)}': {reason}"
    if "mismatched input" in both or "no viable alternative" in both or "token recognition error" in both:
        return f"could not parse the command line: {first_line(text)}; write overrides as key=value"
    return None


def _group_not_a_name(e, text, both, overrides):
    """Hydra fails on a group given a number, a bool or a list of them
    (optimizer=5, data=true, data=[1]) with a message that names no key."""
    # An interpolation as a group's option (data=${nope}) fails to resolve before any option is looked up.
    if not ("Config group override must be" in text or "Error resolving interpolation" in text
            or isinstance(e, TypeError)):
        return None
    return _bad_group_value(overrides) or None


_MATCHERS = (_missing_option, _unknown_key, _bad_value, _syntax, _group_not_a_name)


def _bad_group_value(overrides: Sequence[str]) -> str:
    """Hydra fails on a group given a number, a bool or a list of them
    (optimizer=5, data=true, data=[1]) with a message that names no key:
    find it on the command line."""
    for override in overrides:
        key, eq, value = override.lstrip("+~").partition("=")
        if "," in value and not value.startswith("["):
            continue  # a sweep over several options (optimizer=sgd,adam), not one bad value
        # What Hydra reads as a bool, a number or a list, not an option's name.
        if eq and key in (*GROUPS, "experiment") and (not re.fullmatch(r"[A-Za-z_][\w-]*", value)
                                     or value.lower() in ("true", "false", "null", "inf", "nan")):
            return _not_a_choice(key, value, sorted(p.stem for p in (CONF / key).glob("*.yaml")))
    return ""


def _not_a_choice(group: str, value: str, options) -> str:
    valid = [o for o in options if not o.startswith("_")]
    return f"{group}={value} is not a known choice; valid choices: {', '.join(valid)}"
