"""The results table: every preset, several seeds, real test sets.

    python bench/results.py [--seeds 0,1,2] [--presets fashion_mlp,...] [--device auto] [--data-root data]

Runs `trainer experiment=<preset> seed=<s>` for each preset and seed (a fresh
process each, outputs under outputs/results/<date>/), then writes
bench/results/results-<date>-<device>.json and .md: mean ± std of the final
test accuracy, the best epoch (chosen on the preset's validation split, never
on test), training seconds and the device. The README's results table is the
Markdown file's table. A failed run is reported, not hidden.
"""
from __future__ import annotations

import argparse
import datetime
import json
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


def run_one(preset: str, seed: int, a, out: Path) -> dict:
    run_dir = out / f"{preset}-seed{seed}"
    cmd = [sys.executable, "-m", "trainer", f"experiment={preset}", f"seed={seed}", f"device={a.device}",
           f"data.root={a.data_root}", f"hydra.run.dir={run_dir}", *a.extra]
    print("$", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    try:
        m = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        m = {"status": "failed", "error": (proc.stderr.strip().splitlines() or ["no metrics.json"])[-1]}
    m["command"] = " ".join(["trainer", *cmd[3:5]])
    return m


def aggregate(preset: str, runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("status") == "completed"]
    accs = [r["final"]["test/acc"] for r in ok]
    target, baseline = PRESETS[preset]
    row = {
        "preset": preset, "seeds": len(runs), "completed": len(ok),
        "test_acc_mean": statistics.mean(accs) if accs else None,
        "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "test_acc_each": accs,
        "best_epoch": [r["final"].get("best_epoch") for r in ok],
        "epochs": ok[0]["final"].get("epochs") if ok else None,
        "train_seconds_mean": statistics.mean(r["final"]["train_seconds"] for r in ok) if ok else None,
        "device": ok[0].get("device_name") or ok[0].get("device") if ok else None,
        "target": target, "baseline": baseline,
        "errors": [r.get("error") for r in runs if r.get("status") != "completed"],
    }
    row["meets_target"] = None if target is None or row["test_acc_mean"] is None else row["test_acc_mean"] >= target
    return row


def markdown(rows: list[dict], date: str, device: str) -> str:
    lines = [f"Measured {date} on {device}; mean ± std over seeds of the final test accuracy "
             "(settings chosen on a validation split carved from train).", "",
             "| preset | command | test accuracy | target | seeds | epochs | training s (mean) | baseline to beat |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        acc = (f"{100 * r['test_acc_mean']:.2f}% ± {100 * r['test_acc_std']:.2f}"
               if r["test_acc_mean"] is not None else "failed")
        target = f"≥ {100 * r['target']:.1f}%" if r["target"] else "64-66%"
        secs = f"{r['train_seconds_mean']:.0f}" if r["train_seconds_mean"] is not None else "-"
        lines.append(f"| {r['preset']} | `trainer experiment={r['preset']} seed=S` | {acc} | {target} | "
                     f"{r['completed']}/{r['seeds']} | {r['epochs']} | {secs} | {r['baseline']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default="data")
    p.add_argument("extra", nargs="*", help="extra trainer overrides for every run")
    a = p.parse_args(argv)
    a.data_root = str(Path(a.data_root).resolve())
    date = datetime.date.today().isoformat()
    out = REPO / "outputs" / "results" / date
    rows = []
    for preset in a.presets.split(","):
        runs = [run_one(preset, int(s), a, out) for s in a.seeds.split(",")]
        rows.append(aggregate(preset, runs))
        print(json.dumps(rows[-1]), flush=True)
    device = rows[0]["device"] or a.device if rows else a.device
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"results-{date}-{str(device).replace(' ', '_').replace('/', '_')}"
    stem.with_suffix(".json").write_text(json.dumps({"date": date, "device": device, "rows": rows}, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows, date, str(device)))
    print(markdown(rows, date, str(device)))
    return 0 if all(r["completed"] == r["seeds"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
