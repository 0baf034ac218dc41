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


def _names(node) -> list[str]:
    return [f.name for f in dataclasses.fields(node) if not f.name.startswith("_")]


def _sections() -> dict[str, type]:
    """The top-level keys that hold a section (train, early_stopping, ...): set one of its keys, not it."""
    return {f.name: type(f.default_factory()) for f in dataclasses.fields(schema.TrainerConfig)  # type: ignore[misc]
            if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory())}


def top_level_keys() -> list[str]:
    """Every key a command line may set at the top: the groups (set to an option), the plain
    values, and each section's keys written out (train.shuffle)."""
    sections = _sections()
    keys = {*GROUPS, *PRESET_GROUPS, *(k for k in _names(schema.TrainerConfig)
                                         if k not in sections and k not in GROUPS)}
    keys.update(f"{name}.{leaf}" for name, node in sections.items() for leaf in _names(node))
    return sorted(keys)


def chosen_option(group: str, overrides: Sequence[str] = ()) -> str | None:
    """The option of a group the command line picks (the last `group=x`), else the default's."""
    picked = [o.split("=", 1)[1] for o in overrides if o.lstrip("+~").startswith(f"{group}=")]
    if picked:
        return picked[-1] if re.fullmatch(r"[\w-]+", picked[-1]) else None  # a sweep (sgd,adam): none of them
    default = re.search(rf"^\s*-\s*{group}:\s*(\S+)", (CONF / "config.yaml").read_text(), flags=re.M)
    return default.group(1) if default else None


def group_keys(group: str, overrides: Sequence[str] = (), *, chosen: bool = True) -> list[str]:
    """The keys `group` accepts: of its chosen option's schema (chosen=True), else of any of its options."""
    if f"{group}" in schema.SCHEMAS:
        return _names(schema.SCHEMAS[group])
    if group in _sections():
        return _names(_sections()[group])
    options = {name.split("/", 1)[1]: node for name, node in schema.SCHEMAS.items() if name.startswith(f"{group}/")}
    option = chosen_option(group, overrides) if chosen else None
    used = re.search(rf"/schema/{group}/(\w+)@", _read(CONF / group / f"{option}.yaml")) if option else None
    if used and used.group(1) in options:
        return _names(options[used.group(1)])
    return sorted({name for node in options.values() for name in _names(node)})


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def suggest(key: str, overrides: Sequence[str] = (), accepted: Sequence[str] | None = None) -> str:
    """A "did you mean" that names only a key the config would accept (`accepted`: the chosen
    option's keys where the caller knows them), else where to see every key."""
    parent, _, leaf = key.rpartition(".")
    if parent:
        keys = list(accepted) if accepted is not None else group_keys(parent, overrides)
        if leaf in group_keys(parent, chosen=False) and leaf not in keys:  # a key of another option
            return f"; the chosen {parent} has no '{leaf}' (run `trainer --cfg job` to see its keys)"
        close = difflib.get_close_matches(leaf, keys, n=1)
        close = [f"{parent}.{close[0]}"] if close else []
    else:
        close = difflib.get_close_matches(key, top_level_keys(), n=1)
    return f"; did you mean '{close[0]}'?" if close else "; run `trainer --cfg job` to see every key"


# What a value of each schema type looks like, for the "could not be converted" case.
_EXAMPLES = {"float": "; write a number such as 0.001 or 1e-3", "integer": "; write a whole number such as 64",
             "bool": "; write true or false"}


def describe(e: BaseException, overrides: Sequence[str] = ()) -> str:
    """One line for an error raised while Hydra composes the config (or sets up
    the run folder). `overrides` is the command line: some Hydra errors do not
    say which key they are about, and it lets the line name it anyway."""
    if isinstance(e, OSError) and e.errno is not None:  # not Hydra's MissingConfigException, also an OSError
        looked_up = _looked_up_key(e, overrides)
        if looked_up:
            return looked_up
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


def _looked_up_key(e: OSError, overrides: Sequence[str]) -> str:
    """Hydra looks a key up on disk as a config group (<search path>/<key>): an
    OSError there (a name too long for the file system) is about that key, not
    about writing the output folder."""
    path = Path(e.filename or "")
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if path.name and path.name in (key, key.split(".", 1)[0]):
            return f"unknown config key '{_short(key)}'{suggest(key, overrides)}"
        if key in (*GROUPS, *PRESET_GROUPS) and path.name in (value, f"{value}.yaml"):
            return _not_a_choice(key, _short(value), sorted(p.stem for p in (CONF / key).glob("*.yaml")))
    if "conf" in path.parts:  # inside a config search path (ours, Hydra's): reading, never writing
        return f"cannot read the config {_short(path.name)}: {e.strerror}; check the command line's keys and options"
    return ""


def _short(text: str) -> str:
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def is_lr_elsewhere(key: str) -> bool:
    """A learning rate set inside a group: optimizer.lr, scheduler.max_lr
    (onecycle's peak is the run's lr), scheduler.lr, ..."""
    group, _, name = key.lstrip("+~").partition(".")
    return bool(group) and name in ("lr", "max_lr", "learning_rate")


def lr_elsewhere(key: str, value: str) -> str:
    """The line for a learning rate set inside a group (see is_lr_elsewhere); it
    advises lr=<the same value> only where lr would accept that value."""
    try:
        number = float(value)
    except ValueError:
        number = None
    advice = f"lr={value}" if number is not None and schema.accepts("lr", number) else "lr=1e-3 (a positive number)"
    return (f"{key} is not a key: the learning rate is the top-level lr, one value for the optimizer, "
            f"the scheduler (onecycle's peak) and the record; write {advice}")


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
    return f"unknown config key '{key}'{within}{suggest(key, overrides)}"


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
