"""The eager ceiling: the quickstart's training as a bare loop over resident tensors.

The same data, network, initial weights, loss, optimizer and batch order as
the trainer's default run, with nothing else: the whole split decoded once
into a uint8 tensor on the device, each batch a slice of it divided by 255,
forward, loss, backward, step. No logging, no accuracy sums, no checkpoint.
What eager PyTorch costs for this model; the trainer's epoch is measured
against it (`make bench`).

    python bench/bare.py --data-root data --epochs 2 [--dataset mnist] [--device cuda]

Prints one JSON line, in the shape bench/reference.py prints.
"""
import time

T_SCRIPT = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import datasets  # noqa: E402

from reference import NeuralNetwork, cpu_name, process_start_time  # noqa: E402

DATASETS = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion_mnist")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    a = p.parse_args()
    t_process = process_start_time()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    try:
        train = DATASETS[a.dataset](root=a.data_root, train=True, download=False)
        test = DATASETS[a.dataset](root=a.data_root, train=False, download=False)
    except RuntimeError:
        sys.exit(f"bare: no files under {a.data_root}; run `make data`")
    x, y = train.data.to(device), train.targets.to(device)
    tx, ty = test.data.to(device), test.targets.to(device)

    torch.manual_seed(0)
    model = NeuralNetwork().to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, foreach=True)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    epoch_seconds, test_acc, first_step = [], [], None
    for _ in range(a.epochs):
        sync()
        t0 = time.perf_counter()
        for i in range(0, len(y), 64):
            loss = loss_fn(model(x[i:i + 64].unsqueeze(1).float() / 255), y[i:i + 64])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if first_step is None:
                sync()
                first_step = time.time()
        sync()
        epoch_seconds.append(time.perf_counter() - t0)
        with torch.no_grad():
            pred = torch.cat([model(tx[i:i + 2000].unsqueeze(1).float() / 255).argmax(1)
                              for i in range(0, len(ty), 2000)])
        test_acc.append((pred == ty).float().mean().item())
    n = len(y)
    print(json.dumps({
        "name": "bare", "dataset": a.dataset, "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "epochs": a.epochs, "batch_size": 64,
        "train_samples": n, "epoch_seconds": epoch_seconds, "samples_per_second": [n / s for s in epoch_seconds],
        "test_acc": test_acc, "final_test_acc": test_acc[-1],
        "startup_seconds": first_step - t_process if first_step else None,
    }))


if __name__ == "__main__":
    main()
