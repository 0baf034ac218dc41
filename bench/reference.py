"""The reference loop: the PyTorch quickstart from the seed notes, timed.

Kept as close to the tutorial as possible, because it is the yardstick the
trainer is measured against: torchvision dataset + ToTensor(), DataLoader with
batch 64 and no shuffle, the 784-512-512-10 MLP built right after
torch.manual_seed(0), CrossEntropyLoss, SGD lr=1e-3, and the tutorial's own
train()/test(), including the `loss.item()` print every 100 batches (that
sync is part of what the reference costs). The prints go to a quiet stream so
stdout carries only the result: one JSON line, the last line.

    python bench/reference.py --data-root data --epochs 5 [--dataset mnist] [--device cuda]

Fashion-MNIST, 5 epochs: test accuracy 49.5, 59.2, 61.3, 63.5, 64.9 %.
"""
import time

T_SCRIPT = time.time()  # before the heavy imports: they are part of startup

import argparse
import json
import os
import platform
import resource
import sys

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

DATASETS = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST}


def process_start_time() -> float:
    """Wall-clock time at which this process was created (before the interpreter
    started), so startup includes interpreter and import time like any user sees.

    /proc/self/stat gives the start in clock ticks since boot and /proc/uptime
    the time since boot, both on the same clock; /proc/stat's btime would be
    simpler but is rounded to whole seconds. Falls back to the top of the script.
    """
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name may contain spaces
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        return time.time() - age
    except (OSError, ValueError, IndexError):
        return T_SCRIPT


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- the tutorial, verbatim apart from `file=LOG` and the returned numbers ----

class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


def train(dataloader, model, loss_fn, optimizer):
    size = len(dataloader.dataset)
    model.train()  # in the official tutorial, not in the notes; a no-op for this MLP
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(device), y.to(device)

        pred = model(X)
        loss = loss_fn(pred, y)

        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        if batch % 100 == 0:
            loss, current = loss.item(), (batch + 1) * len(X)
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]", file=LOG)


def test(dataloader, model, loss_fn):
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    model.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    test_loss /= num_batches
    correct /= size
    print(f"Test Error: \n Accuracy: {(100*correct):>0.1f}%, Avg loss: {test_loss:>8f} \n", file=LOG)
    return correct, test_loss


# ---- timing harness around it ----

def sync():
    # CUDA runs asynchronously: without this a timer measures kernel launches.
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    global device, LOG
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default="data", help="folder holding <Dataset>/raw/*-ubyte (torchvision layout)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion_mnist")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.add_argument("--verbose", action="store_true", help="show the tutorial's prints on stderr")
    args = p.parse_args()

    t_process = process_start_time()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("reference: --device cuda asked, but torch.cuda.is_available() is False")
    LOG = sys.stderr if args.verbose else open(os.devnull, "w")

    Dataset = DATASETS[args.dataset]
    try:  # download=False: a benchmark must never time (or depend on) the network
        training_data = Dataset(root=args.data_root, train=True, download=False, transform=ToTensor())
        test_data = Dataset(root=args.data_root, train=False, download=False, transform=ToTensor())
    except RuntimeError:  # torchvision's message suggests download=True, which is not the fix here
        sys.exit(f"reference: no {Dataset.__name__} files under {args.data_root}/{Dataset.__name__}/raw; run `make data`")

    batch_size = 64
    train_dataloader = DataLoader(training_data, batch_size=batch_size)
    test_dataloader = DataLoader(test_data, batch_size=batch_size)

    torch.manual_seed(0)  # right before the model: fixes the init, hence the accuracy curve
    model = NeuralNetwork().to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    # Startup ends when the first optimizer step is done. A one-shot hook keeps
    # train() itself untouched.
    first_step = {}

    def on_first_step(opt, args_, kwargs_):
        sync()
        first_step["t"] = time.time()
        handle.remove()

    handle = optimizer.register_step_post_hook(on_first_step)

    epoch_seconds, test_acc, test_loss = [], [], []
    for t in range(args.epochs):
        print(f"Epoch {t+1}\n-------------------------------", file=LOG)
        sync()
        t0 = time.perf_counter()
        train(train_dataloader, model, loss_fn, optimizer)
        sync()
        epoch_seconds.append(time.perf_counter() - t0)
        acc, loss = test(test_dataloader, model, loss_fn)  # outside the timed span
        test_acc.append(acc)
        test_loss.append(loss)
    print("Done!", file=LOG)

    n = len(training_data)
    result = {
        "name": "reference",
        "dataset": args.dataset,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "batch_size": batch_size,
        "train_samples": n,
        "epoch_seconds": epoch_seconds,
        "samples_per_second": [n / s for s in epoch_seconds],
        "test_acc": test_acc,
        "test_loss": test_loss,
        "final_test_acc": test_acc[-1] if test_acc else None,
        "startup_seconds": first_step["t"] - t_process if first_step else None,
        "startup_seconds_from_script": first_step["t"] - T_SCRIPT if first_step else None,
        # ru_maxrss is in KiB on Linux
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "total_seconds": time.time() - t_process,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
