"""Resuming a run: which checkpoint, with which settings, and which changes
can apply to the saved state.

    trainer resume=outputs/runs/<run>                 # the run's own settings, its own folder
    trainer resume=outputs/runs/<run> epochs=10 lr=0.01   # with safe changes
    trainer resume=auto                               # this run folder's last.ckpt, if any

`expand()` runs before Hydra composes: it puts the run's own overrides back
on the command line, so the user never repeats a flag. `load()` finds and
reads the checkpoint, and `check_changes()` decides, before any file is
written, whether each difference between the saved config and the new one
can apply: a refused one is one line naming the key.
"""
from __future__ import annotations

import os
from pathlib import Path

from trainer.core import checkpoint, display, distributed, paths, schedules
from trainer.core.config import as_dict, from_dict
from trainer.core.errors import UserError
from trainer.core.files import read_text
from trainer.runs.record import read

# Changes that apply to a saved state at any point: how long, how fast, what
# is logged and saved, and where the data and the computation live.
SAFE = ("epochs", "lr", "device", "threads", "compile", "cuda_graph", "deterministic", "precision", "channels_last",
        "train.log_every_n_steps", "train.eval_batch_size", "train.grad_clip", "train.nan_policy",
        "train.max_skipped_batches", "early_stopping.", "checkpoint.", "tracking.",
        "data.root", "data.search_paths", "data.download", "data.verify", "loader.")
# Changes that only apply where an epoch starts: they change how an epoch is cut into batches.
AT_EPOCH_START = ("batch_size", "data.subset", "train.shuffle", "train.drop_last")
# Saved as the run was launched, not settings: never compared.
IGNORED = ("resume",)


# A run's folder typed back as it was printed (`hydra.run.dir=<folder> resume=auto`).
FOLDER_SETTINGS = ("hydra.run.dir=", "hydra.sweep.dir=")


def expand(args: list[str]) -> list[str]:
    """`resume=<run dir or ckpt>` -> that run's own overrides, then the new
    ones, then where to write (the run's own folder). `resume=auto` is
    resolved later, in the job's own folder."""
    args = [quoted_folder(a) for a in args]
    given = [a for a in args if a.startswith("resume=")]
    if not given or given[-1] == "resume=auto":
        return args
    import yaml

    typed = _unquote(given[-1].split("=", 1)[1])
    if not typed.strip():  # Path("") is ".", the current folder: never what an empty value meant
        raise UserError("resume= is empty; give a run directory or a .ckpt file (resume=outputs/runs/<run>), "
                        "or resume=auto")
    target = Path(typed).expanduser()
    if is_cross_validation(target):
        # No checkpoint of its own: its folds continue with resume=auto, each from its own.
        run_dir, resume_to = target, quote(str(target.resolve()))
    else:
        ckpt = checkpoint.find(target)
        run_dir, resume_to = checkpoint.run_dir_of(ckpt), quote(str(ckpt.resolve()))
    elsewhere = [a for a in args if a.startswith("hydra.run.dir=")]
    if elsewhere and Path(_unquote(elsewhere[-1].split("=", 1)[1])).expanduser().resolve() != run_dir.resolve():
        raise UserError(f"resume= continues the run in its own folder ({run_dir}); leave out {elsewhere[-1]}")
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise UserError(f"{run_dir} has no .hydra/overrides.yaml, so its settings are unknown; "
                        "resume a run directory made by trainer")
    previous = yaml.safe_load(read_text(saved)) or []
    extra = [a for a in args if not a.startswith("resume=")]
    given_keys = {_key(a) for a in extra}  # a key given again replaces the run's own value
    kept = [o for o in previous if not o.startswith(("resume=", "hydra.run.dir=")) and _key(o) not in given_keys]
    return [*kept, *extra, f"resume={resume_to}", f"hydra.run.dir={quote(str(run_dir))}"]


def quoted_folder(arg: str) -> str:
    """`hydra.run.dir=<folder>` with the folder quoted for Hydra's grammar:
    folder names hold `=` and `,` (`model=conv,lr=0.01-<date>_...`,
    `0_lr=0.001,optimizer=sgd`), which Hydra would read as syntax (a comma
    as a sweep). A value already quoted, or with an interpolation, stays as typed."""
    if not arg.startswith(FOLDER_SETTINGS):
        return arg
    key, value = arg.split("=", 1)
    if not value or value[0] in "'\"" or "${" in value:
        return arg
    # ~ as a shell expands it: a shell leaves it alone after `hydra.run.dir=`,
    # and Hydra would make a folder named ~ in the current one.
    return f"{key}={quote(os.path.expanduser(value))}"


def is_cross_validation(folder: Path) -> bool:
    """A cross-validation's own folder, as its record states."""
    return folder.is_dir() and (read(folder) or {}).get("kind") == "cv"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def quote(value: str) -> str:
    """A value for Hydra's override grammar, whatever characters it holds
    (spaces, quotes, commas, brackets)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace("\\" + value[0], value[0]).replace("\\\\", "\\")
    return value


def load(resume: str | None, run_dir: Path) -> tuple[Path, dict] | None:
    """(checkpoint path, state) to continue from, or None for a fresh start.
    `auto`: this run folder's own last.ckpt if it has one (rank 0 decides;
    the other DDP ranks write into scratch folders)."""
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        # Only nothing there means a fresh start: a folder or a symlink to nothing there is said, not skipped.
        found = str(last) if distributed.is_main() and paths.problem(last, "file") != "missing" else None
        resume = distributed.broadcast_object(found)
    if not resume:
        return None
    path = Path(resume)
    return path, checkpoint.load(path)


def check_rewind(saved: tuple[Path, dict] | None, run_dir: Path, previous: dict | None) -> None:
    """A checkpoint other than the folder's own last one (best.ckpt) resumed
    into a folder whose record goes further would overwrite the epochs after
    it: refused. (last.ckpt may lag the record by an epoch after a kill, and
    then its own history is the truth.)"""
    if saved is None or previous is None:
        return
    path, state = saved
    last = run_dir / "checkpoints" / "last.ckpt"
    kept, recorded = len(state.get("history") or []), len(previous.get("history") or [])
    if recorded > kept and not (last.is_file() and last.samefile(path)):
        lost = f"epochs {kept + 1}-{recorded}" if recorded > kept + 1 else f"epoch {recorded}"
        raise UserError(f"{path} is at epoch {kept}, and {run_dir} has recorded {recorded}: continuing from it "
                        f"would overwrite {lost}; resume={run_dir} continues from its end")


def check_changes(saved: dict, new: dict, position: dict, auto_in: Path | None = None) -> dict[str, tuple]:
    """{key: (saved, new)} of the changes that apply; UserError (one line,
    naming the key) for the first that cannot. `auto_in`: the run folder
    when resume=auto asks, whose settings are the command's, not the run's
    (a value refused may be a default the user never typed): the line then
    points to resume=<folder>, which takes the run's own."""
    before, after = _flatten(saved), _flatten(new)
    # A key only one side has is one the saved run predates (or that is gone):
    # the saved state decides it. Another model or optimizer differs in _target_.
    changes = {k: (before[k], after[k]) for k in sorted(set(before) & set(after), key=_which_first)
               if before[k] != after[k] and not k.startswith(IGNORED)}
    mid_epoch = position.get("step", 0) > 0
    if "epochs" in changes and "epoch" in position:  # the epoch in progress counts as trained once it has steps
        check_epochs(changes["epochs"][1], position["epoch"] - (0 if mid_epoch else 1), auto_in)
    scheduler = before.get("scheduler.name")  # the schedule the saved state follows
    for key, (old, value) in changes.items():
        name = key.removesuffix("._target_")  # model._target_ differs: another model
        refused = _refusal(key, name, scheduler, position)
        if refused is not None:
            why, fix = refused
            shown = f"{name}={display.value(value)} (the run has {display.value(old)})"
            raise UserError(f"{shown} {why}; {own_settings(auto_in) if auto_in else fix}")
    return changes


def _refusal(key: str, name: str, scheduler: str | None, position: dict) -> tuple[str, str] | None:
    """(why, what to do) when a change of `key` cannot apply to the saved state at `position`."""
    if key in ("epochs", "batch_size", "data.subset", "train.drop_last") and scheduler in schedules.SPANS_THE_RUN:
        return (f"cannot change on resume: scheduler={scheduler} laid out its schedule over the whole run when "
                "it started", "start a new run to change it")
    if key in AT_EPOCH_START:
        if position.get("step", 0) > 0:
            return (f"cannot change in the middle of an epoch (the checkpoint is at epoch {position['epoch']}, "
                    f"step {position['step']})", "resume without it, or from a checkpoint saved at the end of an epoch")
        return None
    if not any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE):
        return ("cannot change when resuming: the saved state was trained with the run's own value",
                f"resume without {name}=..., or start a new run")
    return None


def own_settings(run_dir: Path) -> str:
    """The way out of a resume=auto refused for a setting of the command, not
    of the run: resume=<folder> continues it with the run's own overrides."""
    return (f"resume=auto continues with this command's settings, not the run's; resume={run_dir} continues it "
            "with its own (add only what should change, such as epochs=N)")


def check_epochs(epochs: int, trained: int, auto_in: Path | None = None) -> None:
    """A run cannot be made shorter than it has already trained: its record
    and checkpoints hold those epochs (`auto_in`: as check_changes)."""
    if epochs < trained:
        fix = own_settings(auto_in) if auto_in else f"resume with epochs={trained} or more, or start a new run"
        raise UserError(f"epochs={epochs} is fewer than the run has already trained ({trained}); {fix}")


def check_record(run_dir: Path, previous: dict, new: dict, auto: bool = False) -> dict[str, tuple]:
    """check_changes against the config a run folder recorded when its run
    started (.hydra/config.yaml), for what a checkpoint cannot tell: a
    cross-validation resumed as a single run or the other way round, another
    fold count, a completed run. {} where no run started (a refused job).
    `auto`: resume=auto asks (check_changes)."""
    import yaml

    saved = run_dir / ".hydra" / "config.yaml"
    if previous.get("monitor") is None or not saved.is_file():
        return {}
    try:  # an older run's moved `_target_`s upgraded, as a checkpoint's are
        recorded = as_dict(from_dict(yaml.safe_load(read_text(saved)) or {}))
    except UserError as e:
        raise UserError(f"{saved}: {e}") from e
    return check_changes(recorded, new, {"step": 0}, run_dir if auto else None)


def _which_first(key: str) -> tuple:
    """Another model, optimizer or schedule is named before the arguments that come with it."""
    group, _, leaf = key.rpartition(".")
    return group, leaf not in ("_target_", "name"), key


def _flatten(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out: dict = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def describe(changes: dict[str, tuple]) -> str:
    """'epochs 2 -> 3, lr 0.001 -> 0.01' for the resume message and the log."""
    return ", ".join(f"{k} {display.value(a)} -> {display.value(b)}" for k, (a, b) in changes.items())
