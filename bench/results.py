"""The results table: every preset over several seeds, real test sets.

    python bench/results.py [--seeds 0,1,2] [--presets fashion_mlp,...] [--device auto] [--data-root data]
                            [--jobs 1] [extra trainer overrides ...]
    python bench/results.py --readme quickstart,conv,optimizers     # the README's first table and sweep table

Every number a README table quotes comes from a file this script writes,
with the machine it ran on (`machine()`: CPU model, the instruction set
torch's kernels use, cores, torch): floating-point kernels differ between
CPUs (AVX2 against AVX-512, another core count), so another machine gets
other last digits, and other durations.

Each preset is one sweep, `trainer -m experiment=<preset> seed=0,1,2`, into
outputs/results/<date>/<preset>/; its seed group (trainer.sweeps.groups, the
summary's own statistics) gives the mean ± sample std of the final test
accuracy, so the README's table is what `trainer-summary` says of those
sweeps. Written to bench/results/results-<date>-<device>.json and .md, with
the best epochs (chosen on the preset's validation split, never on test),
training seconds and the device. A failed run is reported, not hidden.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

# preset -> (target mean test accuracy, public baseline it must beat)
PRESETS = {
    "quickstart": (None, "PyTorch quickstart tutorial, 5 epochs: 64-66%"),
    "fashion_mlp": (0.895, "best MLP in the Fashion-MNIST benchmark table: 88.3%"),
    "fashion_conv": (0.935, "2-conv CNNs in that table: 87.6-93.9%"),
    "mnist_mlp": (0.986, "Keras mnist_mlp: 98.4%"),
    "mnist_conv": (0.995, "pytorch/examples mnist 99.2%, Keras mnist_cnn 99.25%"),
}


# The README's own quick commands (its first Results table and the sweep table under Sweeps).
README_RUNS = {
    "quickstart": [],
    "conv": ["model=conv", "optimizer=adam", "lr=1e-3", "epochs=1", "data=mnist"],
    "optimizers": ["-m", "optimizer=sgd,adam,adamw,rmsprop,adagrad,adadelta", "epochs=2"],
    # The speed runs' accuracy on the CPU, one torch thread (their times to accuracy are a GPU's).
    "mnist_speedrun": ["-m", "experiment=mnist_speedrun", "seed=0,1,2,3,4", "threads=1"],
    "mnist_speedrun_995": ["experiment=mnist_speedrun_995", "threads=1"],
    "fashion_speedrun": ["experiment=fashion_speedrun", "threads=1"],
}


def machine() -> dict:
    """What the numbers were measured on: other CPUs differ in the last digits."""
    import torch

    model = platform.processor() or "CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version()}


def run_readme(name: str, a, out: Path) -> dict:
    """One README command as a user types it (with the data root); the numbers its table quotes."""
    args = README_RUNS[name]
    folder = out / name
    where = "hydra.sweep.dir" if args[:1] == ["-m"] else "hydra.run.dir"
    cmd = [sys.executable, "-m", "trainer", *args, f"data.root={a.data_root}", f"{where}={folder}", *a.extra]
    print("$ trainer", " ".join(args), flush=True)
    exit_code = subprocess.run(cmd, cwd=REPO).returncode
    if not (folder / "metrics.json").is_file() and not (folder / "sweep.json").is_file():
        raise SystemExit(f"trainer {' '.join(args)} exited {exit_code} and wrote no record into {folder}")
    if where == "hydra.run.dir":
        return {"command": ["trainer", *args], **_run_numbers(json.loads((folder / "metrics.json").read_text()))}
    jobs = sorted(p for p in folder.iterdir() if (p / "metrics.json").is_file())
    return {"command": ["trainer", *args],
            "jobs": {p.name: _run_numbers(json.loads((p / "metrics.json").read_text())) for p in jobs}}


def _run_numbers(record: dict) -> dict:
    final, history = record.get("final") or {}, record.get("history") or []
    metric = "val/acc" if any("val/acc" in row for row in history) else "test/acc"
    return {"status": record.get("status"), "test_acc": final.get("test/acc"), "test_loss": final.get("test/loss"),
            "per_epoch": [row.get(metric) for row in history], "best_epoch": final.get("best_epoch"),
            "train_seconds": final.get("train_seconds"),
            "epoch_seconds_median": statistics.median(r["epoch_seconds"] for r in history) if history else None,
            "device": record.get("device")}


def readme_main(a) -> int:
    date = datetime.date.today().isoformat()
    out = REPO / "outputs" / "results" / date / "readme"
    result = {"date": date, "machine": machine(), "runs": {}}
    for name in a.readme.split(","):
        result["runs"][name] = run_readme(name, a, out)
        print(json.dumps(result["runs"][name]), flush=True)
    cpu = re.sub(r"[^A-Za-z0-9.-]+", "_", result["machine"]["cpu"]).strip("_")
    path = Path(a.out) / f"readme-{date}-{cpu}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # the same day's other README runs on this machine stay beside these
        earlier = json.loads(path.read_text())
        if earlier.get("machine") == result["machine"]:
            result["runs"] = {**earlier.get("runs", {}), **result["runs"]}
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Written: {path}")
    statuses = [r.get("status") for run in result["runs"].values() for r in (run.get("jobs") or {"": run}).values()]
    return 0 if all(status == "completed" for status in statuses) else 1


def run_preset(preset: str, a, out: Path) -> dict:
    """One sweep over the seeds; its summary's seed group is the row."""
    sweep = out / preset
    cmd = [sys.executable, "-m", "trainer", "-m", f"experiment={preset}", f"seed={a.seeds}", f"device={a.device}",
           f"data.root={a.data_root}", f"hydra.sweep.dir={sweep}", "resume=auto", *a.extra]
    if a.jobs > 1:
        cmd += ["hydra/launcher=local", f"hydra.launcher.n_jobs={a.jobs}"]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=REPO)
    summary = json.loads((sweep / "summary.json").read_text())
    (group,) = summary["groups"] or [None]
    records = [json.loads((Path(r["path"]) / "metrics.json").read_text()) for r in summary["rows"] if r.get("path")]
    ok = [r for r in records if r.get("status") == "completed"]
    target, baseline = PRESETS[preset]
    row = {
        "preset": preset, "sweep": str(sweep), "seeds": len(summary["rows"]), "completed": len(ok),
        "test_acc_mean": group["mean"] if group else None, "test_acc_std": group["std"] if group else None,
        "test_acc_each": group["values"] if group else [],
        "best_epoch": [r["final"].get("best_epoch") for r in ok],
        "epochs": ok[0]["final"].get("epochs") if ok else None,
        "train_seconds_mean": statistics.mean(r["final"]["train_seconds"] for r in ok) if ok else None,
        "device": ok[0].get("device") if ok else None,
        "target": target, "baseline": baseline,
        "errors": [r.get("error") for r in records if r.get("status") != "completed"],
    }
    row["meets_target"] = None if target is None or row["test_acc_mean"] is None else row["test_acc_mean"] >= target
    return row


def markdown(rows: list[dict], date: str, device: str) -> str:
    lines = [f"Measured {date} on {device}; mean ± sample std over seeds of the final test accuracy "
             "(settings chosen on a validation split carved from train; the seed group of "
             "`trainer -m experiment=<preset> seed=0,1,2`).", "",
             "| preset | command | test accuracy (n) | target | epochs | training s (mean) | baseline to beat |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        acc = (f"{100 * r['test_acc_mean']:.2f}% ± {100 * (r['test_acc_std'] or 0):.2f} (n={r['completed']})"
               if r["test_acc_mean"] is not None else "failed")
        target = f"≥ {100 * r['target']:.1f}%" if r["target"] else "64-66%"
        secs = f"{r['train_seconds_mean']:.0f}" if r["train_seconds_mean"] is not None else "-"
        lines.append(f"| {r['preset']} | `trainer -m experiment={r['preset']} seed=0,1,2` | {acc} | {target} | "
                     f"{r['epochs']} | {secs} | {r['baseline']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default="data")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained side by side (hydra/launcher=local)")
    p.add_argument("--out", default=str(RESULTS), help="folder for results-<date>-<device>.json and .md")
    p.add_argument("--readme", default=None, metavar="NAMES",
                   help=f"run the README's quick commands instead ({','.join(README_RUNS)})")
    p.add_argument("extra", nargs="*", help="extra trainer overrides for every run")
    a = p.parse_args(argv)
    a.data_root = str(Path(a.data_root).resolve())
    if a.readme:
        return readme_main(a)
    date = datetime.date.today().isoformat()
    out = REPO / "outputs" / "results" / date
    rows = []
    for preset in a.presets.split(","):
        rows.append(run_preset(preset, a, out))
        print(json.dumps(rows[-1]), flush=True)
    device = rows[0]["device"] or a.device if rows else a.device
    folder = Path(a.out)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"results-{date}-{re.sub(r'[^A-Za-z0-9.-]+', '_', str(device)).strip('_')}"
    record = {"date": date, "device": device, "machine": machine(), "rows": rows}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows, date, str(device)))
    print(markdown(rows, date, str(device)))
    return 0 if all(r["completed"] == r["seeds"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
