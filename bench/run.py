"""Side-by-side benchmarks: the trainer against the reference loop (bench/reference.py).

    python bench/run.py [compare] --data-root data --device auto --epochs 2 --repeats 3
    python bench/run.py tta --dataset mnist --target 0.99 --trainer-args "experiment=mnist_speedrun"
    python bench/run.py batch-sizes --sizes 64,128,256,512,1024
    python bench/run.py sweep --repeats 3      # a sweep's efficiency: plain job processes vs warm ones

Every run is a fresh child process (imports, data loading and allocator state
count, as they do for a user). Timings on shared machines are noisy, so runs
alternate reference/trainer and the tables show medians and the ratio
trainer/reference: the ratio is the number to trust, not the seconds.
See bench/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
ACC_TOLERANCE = 0.005  # reference and trainer must agree within 0.5 accuracy points
DEFAULT_DATASET = "fashion_mnist"  # the trainer's default config is the quickstart on Fashion-MNIST
MODES = ("compare", "tta", "batch-sizes", "sweep")


# ---------------------------------------------------------------- the trainer's files

# Accuracy keys tried in order in each history entry: test first, then eval/val.
ACC_KEYS = ("test/acc", "eval/acc", "val/acc", "test_acc", "eval_acc", "acc")


def read_trainer_metrics(run_dir: Path) -> dict:
    """Read a trainer run's metrics.json into the same shape as the reference's
    result. The ONLY place that knows the file's layout: adjust names here."""
    path = run_dir / "metrics.json"
    if not path.is_file():  # tolerate a run dir one level deeper (e.g. a job subfolder)
        found = sorted(run_dir.rglob("metrics.json"))
        if not found:
            raise FileNotFoundError(f"no metrics.json under {run_dir}")
        path = found[0]
    m = json.loads(path.read_text())
    history = m.get("history") or []
    timing = m.get("timing") or {}
    acc_history = [_fraction(next((h[k] for k in ACC_KEYS if h.get(k) is not None), None)) for h in history]
    final_acc = (m.get("final") or {}).get("test/acc")
    if final_acc is None:  # no test pass at the end: the last epoch's accuracy
        final_acc = next((a for a in reversed(acc_history) if a is not None), None)
    return {
        "epoch_seconds": [h["epoch_seconds"] for h in history],
        "samples_per_second": [h.get("samples_per_second") for h in history],
        "acc_history": acc_history,
        "final_acc": _fraction(final_acc),
        "startup_seconds": timing.get("startup_seconds"),
        "compile_seconds": timing.get("first_step_seconds"),  # the first step: compilation and warm-up
        "capture_seconds": timing.get("capture_seconds"),  # recording the CUDA graph (cuda_graph)
        "status": m.get("status"),
    }


def _fraction(acc):
    # Accuracies are compared as fractions; a value above 1 can only be a percentage.
    return acc / 100 if isinstance(acc, (int, float)) and acc > 1 else acc


def trainer_command(data_root: str, device: str, run_dir: Path, overrides: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "trainer",
        f"data.root={_hydra_value(data_root)}",
        f"device={device}",
        f"hydra.run.dir={_hydra_value(str(run_dir))}",
        "tracking.tensorboard=false",  # event files are not what we measure
        *overrides,
    ]


def dataset_overrides(dataset: str, overrides: list[str]) -> list[str]:
    """Select the dataset in the trainer, unless the user's overrides already do
    (an experiment= usually picks its data, and Hydra refuses a second choice)."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if dataset == DEFAULT_DATASET or keys & {"data", "experiment"}:
        return []
    return [f"data={dataset}"]


def _hydra_value(value: str) -> str:
    # Hydra parses override values: quote anything beyond plain path characters.
    return value if re.fullmatch(r"[\w/.\-~+]+", value) else "'" + value.replace("'", "\\'") + "'"


# ---------------------------------------------------------------- running children

def run_child(cmd: list[str], timeout: float) -> dict:
    """Run one child process; return its output, exit code, wall time and peak RSS.

    os.wait4 gives the resource usage of this one child (ru_maxrss is the max
    over it and the processes it reaped, e.g. DataLoader workers);
    getrusage(RUSAGE_CHILDREN) would mix the reference and the trainer.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        # Own session, so a timeout or Ctrl-C can stop the child's workers too.
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err, start_new_session=True)
        timed_out = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - t0 > timeout:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return {
        "rc": proc.returncode,
        "timed_out": timed_out,
        "stdout": stdout,
        "stderr": stderr,
        "wall_seconds": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def error_line(child: dict) -> str:
    """The one line that says why a child failed: its last meaningful output line."""
    if child["timed_out"]:
        return f"timed out after {child['wall_seconds']:.0f} s"
    lines = [
        line.strip()
        for line in (child["stderr"] + "\n" + child["stdout"]).splitlines()
        # Hydra ends every error with this hint; the cause is the line before.
        if line.strip() and "HYDRA_FULL_ERROR" not in line
    ]
    return f"exit {child['rc']}: {lines[-1] if lines else 'no output'}"


def failed(child: dict, why: str | None = None) -> dict:
    return {
        "ok": False,
        "error": why or error_line(child),
        "output_tail": (child["stderr"] or child["stdout"])[-3000:],
        "wall_seconds": child["wall_seconds"],
        "peak_rss_mb": child["peak_rss_mb"],
    }


def run_reference(a, device: str, epochs: int, script: str = "reference.py") -> dict:
    """bench/reference.py (the seed's loop) or bench/bare.py (the eager ceiling): one JSON line each."""
    cmd = [sys.executable, str(BENCH / script), "--data-root", a.data_root,
           "--dataset", a.dataset, "--epochs", str(epochs), "--device", device]
    child = run_child(cmd, a.timeout)
    if child["rc"] != 0:
        return failed(child)
    try:  # the result is the last stdout line
        raw = json.loads(child["stdout"].strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return failed(child, f"{script} printed no JSON result line")
    return {
        "ok": True,
        "epoch_seconds": raw["epoch_seconds"],
        "samples_per_second": raw["samples_per_second"],
        "acc_history": raw["test_acc"],
        "final_acc": raw["final_test_acc"],
        "startup_seconds": raw["startup_seconds"],
        "compile_seconds": None,
        "wall_seconds": child["wall_seconds"],
        "peak_rss_mb": child["peak_rss_mb"],  # from wait4, like the trainer's
        "raw": raw,
    }


def run_trainer(a, device: str, run_dir: Path, overrides: list[str]) -> dict:
    cmd = trainer_command(a.data_root, device, run_dir, overrides)
    child = run_child(cmd, a.timeout)
    if child["rc"] != 0:
        return failed(child)
    try:
        metrics = read_trainer_metrics(run_dir)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return failed(child, f"could not read metrics.json: {type(e).__name__}: {e}")
    return {"ok": True, **metrics, "wall_seconds": child["wall_seconds"],
            "peak_rss_mb": child["peak_rss_mb"], "command": shlex.join(cmd)}


# ---------------------------------------------------------------- summaries

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> dict:
    """Medians over the successful runs. Epoch 1 is reported apart: it pays for
    warm-up (allocator, caches, lazy CUDA init, compilation), later epochs do not."""
    ok = [r for r in runs if r["ok"]]
    if not ok:
        return {}
    later = [s for r in ok for s in r["epoch_seconds"][1:]]
    later_sps = [s for r in ok for s in r["samples_per_second"][1:]]
    return {
        "runs_ok": len(ok),
        "epoch_seconds_first": median(r["epoch_seconds"][0] for r in ok if r["epoch_seconds"]),
        # With one epoch there is no steady state: fall back to all epochs.
        "epoch_seconds_steady": median(later or [s for r in ok for s in r["epoch_seconds"]]),
        "samples_per_second": median(later_sps or [s for r in ok for s in r["samples_per_second"]]),
        "startup_seconds": median(r["startup_seconds"] for r in ok),
        "compile_seconds": median(r.get("compile_seconds") for r in ok),
        "peak_rss_mb": median(r["peak_rss_mb"] for r in ok),
        "wall_seconds": median(r["wall_seconds"] for r in ok),
        "final_acc": median(r["final_acc"] for r in ok),
    }


def ratio(trainer, reference):
    return trainer / reference if trainer is not None and reference else None


def progress(label: str, r: dict) -> None:
    if r["ok"]:
        secs = ", ".join(f"{s:.2f}" for s in r["epoch_seconds"])
        acc = f"{100 * r['final_acc']:.2f}%" if r["final_acc"] is not None else "?"
        print(f"  {label}: epochs {secs} s, acc {acc}, RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr)
    else:
        print(f"  {label}: FAILED {r['error']}", file=sys.stderr)


# ---------------------------------------------------------------- environment and output

PROBE = ("import json, torch; c = torch.cuda.is_available(); "
         "print(json.dumps({'torch': torch.__version__, 'cuda': c, "
         "'gpu': torch.cuda.get_device_name() if c else None}))")


def environment(device: str) -> dict:
    """torch version and device, asked of a child so this process never imports
    torch (nor holds a CUDA context while the children run)."""
    child = run_child([sys.executable, "-c", PROBE], 300)
    if child["rc"] != 0:
        sys.exit(f"bench: cannot import torch with {sys.executable}: {error_line(child)}")
    probe = json.loads(child["stdout"].strip().splitlines()[-1])
    if device == "auto":
        device = "cuda" if probe["cuda"] else "cpu"
    if device == "cuda" and not probe["cuda"]:
        sys.exit("bench: --device cuda asked, but torch.cuda.is_available() is False")
    return {
        "device": device,
        "device_name": probe["gpu"] if device == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": probe["torch"],
        "python": sys.version.split()[0],
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def out_path(a, env: dict, suffix: str = "") -> Path:
    if a.out:
        return Path(a.out)
    return RESULTS / f"{env['date'][:10]}-{env['device']}{suffix}.json"


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def print_table(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text is enough to read the numbers
        plain = lambda text: re.sub(r"\[/?[a-z ]*\]", "", text)  # drop rich markup
        print(title)
        for row in [header, *rows]:
            print(" | ".join(f"{plain(c):>14}" for c in row))
        print(plain("\n".join(notes)))
        return
    table = Table(caption="\n".join(notes) or None)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    # Piped into a log (make bench), rich would wrap at 80 columns; logs can be wider.
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(f"[bold]{title}[/]")  # a line of its own: as a table title it wraps
    console.print(table)


def red(text: str) -> str:
    """Rich markup for an error note; the text itself is escaped (it may hold brackets)."""
    try:
        from rich.markup import escape
    except ImportError:
        return text
    return f"[red]{escape(text)}[/]"


def fmt(value, spec: str = ".2f", scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def env_title(env: dict) -> str:
    return f"{env['device_name']} ({env['device']}) · torch {env['torch']} · {env['date']}"


def make_run_root() -> Path:
    # Outside the repo, and a plain path Hydra accepts unquoted.
    return Path(tempfile.mkdtemp(prefix="trainer_bench_"))


def clean_run_root(a, root: Path) -> None:
    if a.keep_runs:
        print(f"trainer run directories kept in {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- mode: compare

def compare(a) -> int:
    env = environment(a.device)
    overrides = [f"epochs={a.epochs}", *dataset_overrides(a.dataset, a.extra), *a.extra]
    names = ["reference", "bare", "trainer"] if a.only is None else [a.only]
    runs = {n: [] for n in names}
    root = make_run_root()
    print(f"bench: {env_title(env)}; {a.repeats} x {names}, {a.epochs} epochs, {a.dataset}", file=sys.stderr)
    try:
        for i in range(a.repeats):
            # Alternate, and swap who goes first each repeat, so drift in machine
            # load (or a warm page cache) does not favour one side.
            for name in names if i % 2 == 0 else names[::-1]:
                if name == "reference":
                    r = run_reference(a, env["device"], a.epochs)
                elif name == "bare":
                    r = run_reference(a, env["device"], a.epochs, "bare.py")
                else:
                    r = run_trainer(a, env["device"], root / str(i), overrides)
                runs[name].append(r)
                progress(f"[{i + 1}/{a.repeats}] {name}", r)
    finally:
        clean_run_root(a, root)

    med = {n: summarize(runs[n]) for n in names}
    ref, bare, tr = med.get("reference", {}), med.get("bare", {}), med.get("trainer", {})
    metrics = [  # (label, key, format)
        ("seconds / epoch, first ↓", "epoch_seconds_first", ".3f"),
        ("seconds / epoch, steady ↓", "epoch_seconds_steady", ".3f"),
        ("samples / s, steady ↑", "samples_per_second", ",.0f"),
        ("startup to first step, s ↓", "startup_seconds", ".2f"),
        ("peak RSS, MB ↓", "peak_rss_mb", ",.0f"),
        ("wall time per run, s ↓", "wall_seconds", ".1f"),
    ]
    ratios = {key: ratio(tr.get(key), ref.get(key)) for _, key, _ in metrics}
    ceiling = {key: ratio(tr.get(key), bare.get(key)) for _, key, _ in metrics}
    rows = [[label, cell(runs.get("reference"), ref.get(key), spec), cell(runs.get("bare"), bare.get(key), spec),
             cell(runs.get("trainer"), tr.get(key), spec), fmt_ratio(ratios[key]), fmt_ratio(ceiling[key])]
            for label, key, spec in metrics]

    diff = None
    if ref.get("final_acc") is not None and tr.get("final_acc") is not None:
        diff = tr["final_acc"] - ref["final_acc"]
    agrees = diff is None or abs(diff) <= ACC_TOLERANCE
    acc_ratio = "—" if diff is None else f"{100 * diff:+.2f} pt" + ("" if agrees else "  [red bold]MISMATCH[/]")
    rows.append([f"test accuracy after {a.epochs} ep., %", cell(runs.get("reference"), ref.get("final_acc"), ".2f", 100),
                 cell(runs.get("bare"), bare.get("final_acc"), ".2f", 100),
                 cell(runs.get("trainer"), tr.get("final_acc"), ".2f", 100), acc_ratio, ""])

    notes = ["medians of alternating runs; trainer / reference: the speed-up over the seed's loop; trainer / bare: "
             "what the trainer costs over a bare loop on the same resident tensors (the eager ceiling; target ≤ 1.05×)"]
    errors = sorted({f"{n}: {r['error']}" for n in names for r in runs[n] if not r["ok"]})
    notes += [red(e) for e in errors]
    if not agrees:
        notes.append(red(f"accuracy differs by {100 * diff:+.2f} points (> {100 * ACC_TOLERANCE} allowed)"))
    print_table(f"trainer vs reference and the bare loop · {a.dataset} · {env_title(env)}",
                ["metric", "reference", "bare loop", "trainer", "trainer / reference", "trainer / bare"], rows, notes)

    write_json(out_path(a, env), {
        "mode": "compare", "environment": env, "args": vars(a),
        "runs": runs, "medians": med, "ratios": ratios, "trainer_over_bare": ceiling,
        "accuracy_diff": diff, "accuracy_agrees": agrees if diff is not None else None, "errors": errors,
    })
    return 0 if agrees and not errors else 1


def fmt_ratio(r) -> str:
    # Two decimals in the usual range; significant digits when far from 1 (0.0031×, 374×).
    return "—" if r is None else (f"{r:.2f}×" if 0.1 <= r < 100 else f"{r:.3g}×")


def cell(runs, value, spec: str, scale: float = 1.0) -> str:
    if runs is None:
        return "not run"
    if not any(r["ok"] for r in runs):
        return "[red]failed[/]"
    return fmt(value, spec, scale)


# ---------------------------------------------------------------- mode: time to accuracy

def time_to_target(run: dict, target: float):
    """Training seconds until the per-epoch accuracy first reaches `target`, and
    the epoch count; (None, None) if it never does. The CUDA-graph capture
    (recording the step, no training) is left out and reported apart; the
    warm-up steps before it are real training and count."""
    total = -(run.get("capture_seconds") or 0.0)
    for epoch, (secs, acc) in enumerate(zip(run["epoch_seconds"], run["acc_history"]), start=1):
        total += secs
        if acc is not None and acc >= target:
            return total, epoch
    return None, None


def tta(a) -> int:
    env = environment(a.device)
    targets = [float(t) for t in str(a.target).split(",")]
    base = [*dataset_overrides(a.dataset, a.extra), *a.extra]
    if a.epochs is not None:
        base.insert(0, f"epochs={a.epochs}")
    root = make_run_root()
    seeds = []
    shown = " and ".join(f"{100 * t:g}%" for t in targets)
    print(f"bench tta: {env_title(env)}; {a.seeds} seeds, to {shown} on {a.dataset}", file=sys.stderr)
    try:
        for seed in range(a.seeds):
            r = run_trainer(a, env["device"], root / f"seed{seed}", [*base, f"seed={seed}"])
            if r["ok"]:
                r["tta"] = {str(t): dict(zip(("seconds", "epochs"), time_to_target(r, t))) for t in targets}
            r["seed"] = seed
            seeds.append(r)
            progress(f"seed {seed}", r)
    finally:
        clean_run_root(a, root)

    ok = [r for r in seeds if r["ok"]]
    accs = [r["final_acc"] for r in ok if r["final_acc"] is not None]
    summary = {"seeds": a.seeds, "seeds_ok": len(ok), "final_acc_mean": statistics.fmean(accs) if accs else None,
               "final_acc_min": min(accs) if accs else None,
               "warmup_seconds_median": median(r.get("compile_seconds") for r in ok),
               "capture_seconds_median": median(r.get("capture_seconds") for r in ok), "targets": {}}
    for t in targets:
        reached = [r["tta"][str(t)]["seconds"] for r in ok if r["tta"][str(t)]["seconds"] is not None]
        summary["targets"][str(t)] = {"seeds_reached": len(reached),
                                      "seconds_mean": statistics.fmean(reached) if reached else None,
                                      "seconds_median": median(reached)}

    def reached_cell(r, t):
        if not r["ok"]:
            return "[red]failed[/]"
        got = r["tta"][str(t)]
        return f"{got['seconds']:.3f} ({got['epochs']} ep.)" if got["seconds"] is not None else "not reached"

    rows = [[str(r["seed"]), *(reached_cell(r, t) for t in targets), fmt(r.get("compile_seconds")),
             fmt(r.get("capture_seconds")), fmt(r.get("final_acc"), ".2f", 100)] for r in seeds]
    rows.append(["mean", *(fmt(summary["targets"][str(t)]["seconds_mean"], ".3f") for t in targets),
                 fmt(summary["warmup_seconds_median"]), fmt(summary["capture_seconds_median"]),
                 fmt(summary["final_acc_mean"], ".2f", 100)])
    notes = [f"training seconds until the per-epoch test accuracy reaches the target (the mean over the seeds that "
             f"reach it: {', '.join(str(summary['targets'][str(t)]['seeds_reached']) for t in targets)} of {a.seeds}); "
             "first step (warm-up, included) and CUDA-graph capture (excluded) shown apart"]
    notes += [red(f"seed {r['seed']}: {r['error']}") for r in seeds if not r["ok"]]
    print_table(f"time to {shown} · {a.dataset} · {env_title(env)}",
                ["seed", *(f"s to {100 * t:g}%" for t in targets), "first step s", "capture s", "final acc %"],
                rows, notes)
    write_json(out_path(a, env, f"-tta-{a.dataset}"),
               {"mode": "tta", "environment": env, "args": vars(a), "targets": targets, "runs": seeds,
                "summary": summary})
    return 0 if len(ok) == a.seeds else 1


# ---------------------------------------------------------------- mode: batch-size sweep

def batch_sizes(a) -> int:
    env = environment(a.device)
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    base = [f"epochs={a.epochs}", *dataset_overrides(a.dataset, a.extra), *a.extra]
    runs = {b: [] for b in sizes}
    root = make_run_root()
    print(f"bench batch-sizes: {env_title(env)}; sizes {sizes}, {a.repeats} repeat(s), {a.epochs} epochs", file=sys.stderr)
    try:
        for i in range(a.repeats):  # round-robin over sizes, so drift spreads over all of them
            for b in sizes:
                r = run_trainer(a, env["device"], root / f"{i}-bs{b}", [*base, f"batch_size={b}"])
                runs[b].append(r)
                progress(f"[{i + 1}/{a.repeats}] batch {b}", r)
    finally:
        clean_run_root(a, root)

    med = {b: summarize(runs[b]) for b in sizes}
    header = ["batch size", "s / epoch, first", "s / epoch, steady", "samples / s", f"acc after {a.epochs} ep., %", "peak RSS, MB"]
    rows = [[str(b), *([fmt(m.get("epoch_seconds_first"), ".3f"), fmt(m.get("epoch_seconds_steady"), ".3f"),
                        fmt(m.get("samples_per_second"), ",.0f"), fmt(m.get("final_acc"), ".2f", 100),
                        fmt(m.get("peak_rss_mb"), ",.0f")] if m else ["[red]failed[/]"] + [""] * 4)]
            for b, m in med.items()]
    errors = sorted({f"batch {b}: {r['error']}" for b in sizes for r in runs[b] if not r["ok"]})
    print_table(f"batch-size sweep · {a.dataset} · {env_title(env)}", header, rows,
                ["medians over repeats; the learning rate is not rescaled, so accuracy drops at large batches"]
                + [red(e) for e in errors])

    path = out_path(a, env, "-batch-sizes")
    write_json(path, {"mode": "batch-sizes", "environment": env, "args": vars(a),
                      "runs": {str(b): rs for b, rs in runs.items()}, "medians": {str(b): m for b, m in med.items()}})
    # The markdown table is always written; the chart only where matplotlib exists.
    md = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    md += ["| " + " | ".join(re.sub(r"\[/?[a-z ]*\]", "", c) for c in row) + " |" for row in rows]
    path.with_suffix(".md").write_text(f"{env_title(env)}\n\n" + "\n".join(md) + "\n")
    plot(path.with_suffix(".png"), med)
    return 0 if not errors else 1


def plot(path: Path, med: dict) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (the .md table has the numbers)", file=sys.stderr)
        return
    points = [(b, m["epoch_seconds_steady"]) for b, m in med.items() if m and m.get("epoch_seconds_steady")]
    if not points:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(*zip(*points), marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("seconds per epoch (steady)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}", file=sys.stderr)


# ---------------------------------------------------------------- mode: sweep

# The 8 one-epoch quickstart jobs of issue 25, 2 at a time.
SWEEP_ARGS = ["-m", "optimizer=sgd,adam,rmsprop,adagrad", "seed=0,1", "hydra/launcher=joblib", "epochs=1",
              "tracking.images_every_n_epochs=0", "tracking.histograms_every_n_epochs=0"]


def sweep_jobs(sweep_dir: Path) -> list[dict]:
    """Each job's metrics.json under a sweep folder, in job order."""
    found = sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    return [dict(json.loads(p.read_text()), job=p.parent.name) for p in found]


def sweep_numbers(child: dict, jobs: list[dict], slots: int) -> dict:
    """Efficiency = summed fit seconds / (slots x wall): 1.0 when the slots
    never wait for a job to start or end. `work` adds the final evaluation and
    pictures (what fit_seconds held before the timing was split)."""
    timing = [j.get("timing") or {} for j in jobs]
    fit = sum(t.get("fit_seconds") or 0 for t in timing)
    work = fit + sum((t.get("final_eval_seconds") or 0) + (t.get("pictures_seconds") or 0) for t in timing)
    wall = child["wall_seconds"]
    return {"ok": child["rc"] == 0 and all(j.get("status") == "completed" for j in jobs), "wall_seconds": wall,
            "jobs": len(jobs), "fit_seconds": fit, "work_seconds": work,
            "efficiency": fit / (slots * wall), "work_efficiency": work / (slots * wall),
            "startup_median": median([t.get("startup_seconds") for t in timing if t.get("startup_seconds")]),
            "acc": {j["job"]: (j.get("final") or {}).get("test/acc") for j in jobs},
            "error": None if child["rc"] == 0 else error_line(child)}


def sweep(a) -> int:
    env = environment(a.device)
    root = make_run_root()
    runs = {"plain": [], "warm": []}
    order = ["plain", "warm"]
    for i in range(a.repeats):
        for name in order if i % 2 == 0 else order[::-1]:  # alternating: drift in load hits both
            sweep_dir = root / f"{name}-{i}"
            cmd = [sys.executable, "-m", "trainer", *SWEEP_ARGS, f"hydra.launcher.n_jobs={a.n_jobs}",
                   f"hydra.launcher.warm={'true' if name == 'warm' else 'false'}",
                   f"data.root={_hydra_value(a.data_root)}", f"device={env['device']}",
                   f"hydra.sweep.dir={_hydra_value(str(sweep_dir))}", *a.extra]
            child = run_child(cmd, a.timeout)
            r = sweep_numbers(child, sweep_jobs(sweep_dir), a.n_jobs)
            runs[name].append(r)
            print(f"  {name:5s} #{i + 1}: wall {r['wall_seconds']:.1f} s, fit {r['fit_seconds']:.1f} s, efficiency "
                  f"{r['efficiency']:.2f}, start-up median {fmt(r['startup_median'])} s"
                  + (f"  {r['error']}" if r["error"] else ""), file=sys.stderr, flush=True)
    same = all(r["acc"] == runs["plain"][0]["acc"] for r in runs["plain"] + runs["warm"])
    rows = [[name, fmt(median([r["wall_seconds"] for r in rs]), ".1f"), fmt(median([r["fit_seconds"] for r in rs]), ".1f"),
             fmt(median([r["efficiency"] for r in rs])), fmt(median([r["work_efficiency"] for r in rs])),
             fmt(median([r["startup_median"] for r in rs]))] for name, rs in runs.items()]
    count = len(runs["warm"][0]["acc"]) if runs["warm"] else 0
    notes = [f"{count} jobs, {a.n_jobs} at a time; medians of {a.repeats} sweeps each, alternating",
             "efficiency = summed fit seconds / (slots x wall); +eval: fit, final evaluation and pictures",
             "every job's test accuracy " + ("identical in every sweep" if same else red("DIFFERS between sweeps"))]
    print_table(f"Sweep throughput · {env_title(env)}", ["jobs as", "wall s", "fit s", "efficiency", "+eval",
                                                        "start-up s"], rows, notes)
    write_json(out_path(a, env, "-sweep"), {"environment": env, "command": SWEEP_ARGS, "n_jobs": a.n_jobs,
                                            "runs": runs, "identical_accuracy": same})
    clean_run_root(a, root)
    return 0 if same and all(r["ok"] for rs in runs.values() for r in rs) else 1


# ---------------------------------------------------------------- command line

def parse_args(argv: list[str]) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-root", default="data", help="folder with <Dataset>/raw/*-ubyte (made by `make data`)")
    common.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    common.add_argument("--dataset", choices=["fashion_mnist", "mnist"], default=DEFAULT_DATASET)
    common.add_argument("--trainer-args", default="", help='extra trainer overrides, e.g. "model=conv lr=0.01"')
    common.add_argument("--timeout", type=float, default=3600, help="seconds before a child run is killed")
    common.add_argument("--out", help="JSON file to write (default bench/results/<date>-<device>[-mode].json)")
    common.add_argument("--keep-runs", action="store_true", help="keep the trainer's run directories")

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("compare", parents=[common], help="reference vs trainer, side by side (the default)")
    c.add_argument("--epochs", type=int, default=2)
    c.add_argument("--repeats", type=int, default=3)
    c.add_argument("--only", choices=["reference", "bare", "trainer"])
    t = sub.add_parser("tta", parents=[common], help="trainer: training time to a target accuracy")
    t.add_argument("--target", default="0.99", help="accuracy as a fraction; several: 0.92,0.93")
    t.add_argument("--seeds", type=int, default=3, help="runs with seed=0..N-1")
    t.add_argument("--epochs", type=int, help="epochs override (default: the config's)")
    b = sub.add_parser("batch-sizes", parents=[common], help="trainer: epoch time against batch size")
    b.add_argument("--sizes", default="64,128,256,512,1024")
    b.add_argument("--epochs", type=int, default=2)
    b.add_argument("--repeats", type=int, default=1)
    w = sub.add_parser("sweep", parents=[common], help="a sweep's efficiency: plain job processes vs warm ones")
    w.add_argument("--repeats", type=int, default=3)
    w.add_argument("--n-jobs", type=int, default=2)

    # `run.py --epochs 5` means compare: the mode word is optional.
    if not argv or (argv[0] not in MODES and argv[0] not in ("-h", "--help")):
        argv = ["compare", *argv]
    a = p.parse_args(argv)
    a.extra = shlex.split(a.trainer_args)
    a.data_root = os.path.abspath(a.data_root)  # children run from the repo root; Hydra may change dirs
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    return {"compare": compare, "tta": tta, "batch-sizes": batch_sizes, "sweep": sweep}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
