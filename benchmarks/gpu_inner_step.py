"""The Entropy-SGD inner step on a GPU, against G, and whether its inner loop synchronises with the host.

    PYTHONPATH=. python benchmarks/gpu_inner_step.py [--json PATH] [--device cuda] [--repeats 30]
                                                     [--batches 128,1024] [--inner-steps 5]

For mnistfc (784-1024-1024-10) and a LeNet-style convnet (conv 20 - conv 50 - fc 500 on 28 x 28 inputs), at each
batch size: G = zero_grad + forward + backward, and one Entropy-SGD inner step = (one outer step of L closure
calls) / L, both timed interleaved in one loop with a device synchronisation before every clock read; the table
gives medians over the repeats after warm-up. The overhead of the inner step is (inner step - G) / G; the goal
on a GPU is below 10 % at batch 1024.

Host synchronisations: one outer step runs under ``torch.cuda.set_sync_debug_mode("warn")`` with the warnings
captured and counted. Entropy-SGD makes exactly one by design (the divergence check once per outer step); any
more is a defect of the inner loop. On CUDA the optimizer draws its noise with torch's own (parallel, Philox)
generator: the chunked CPU stream is not used there.

It imports only torch and the optimizer (the GPU machine may lack the project's other dependencies) and writes
one JSON file. Run without a GPU (``--device cpu``) it checks the script itself, not the GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.functional import cross_entropy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from localentropy.entropy.optim import EntropySGD

TEMPERATURE, STEP_SIZE, GAMMA, LR = 1e-8, 1e-3, 0.03, 0.01


def mnistfc() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )


def convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 20, 5),
        nn.BatchNorm2d(20),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.BatchNorm2d(50),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(),
        nn.Linear(500, 10),
    )


MODELS = {"mnistfc": mnistfc, "convnet": convnet}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    name: str, batch: int, device: torch.device, repeats: int, inner_steps: int, seed: int = 0
) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = MODELS[name]().to(device)
    twin = MODELS[name]().to(device)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    opt = EntropySGD(
        model.parameters(),
        lr=LR,
        gamma=GAMMA,
        sampler="sgld",
        inner_steps=inner_steps,
        generator=generator,
        sampler_options={"step_size": STEP_SIZE, "temperature": TEMPERATURE},
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = cross_entropy(model(x), y)
        loss.backward()
        return loss

    def gradient() -> None:
        twin.zero_grad()
        cross_entropy(twin(x), y).backward()

    def timed(fn: Any) -> float:
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start

    warm = max(3, repeats // 10)
    g_times, step_times = [], []
    for r in range(repeats + warm):
        g = timed(gradient)
        s = timed(lambda: opt.step(closure)) / inner_steps
        if r >= warm:
            g_times.append(g)
            step_times.append(s)
    syncs = count_syncs(lambda: opt.step(closure), device)
    g_med, s_med = statistics.median(g_times), statistics.median(step_times)
    return {
        "model": name,
        "batch": batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "G_ms": g_med * 1e3,
        "inner_step_ms": s_med * 1e3,
        "inner_step_over_G": s_med / g_med,
        "overhead_of_G": (s_med - g_med) / g_med,
        "host_syncs_per_outer_step": syncs,
        "repeats": repeats,
        "inner_steps": inner_steps,
    }


def count_syncs(fn: Any, device: torch.device) -> int | None:
    """Host synchronisations that ``fn`` triggers on CUDA (None elsewhere: the debug mode is CUDA's)."""
    if device.type != "cuda":
        return None
    _sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=Path("gpu_inner_step.json"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--batches", default="128,1024")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run this on a machine with a GPU (or pass --device cpu to check the script)")
        return 2
    rows = [
        measure(name, int(batch), device, args.repeats, args.inner_steps)
        for name in args.models.split(",")
        for batch in args.batches.split(",")
    ]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rows": rows,
    }
    args.json.write_text(json.dumps(report, indent=2))
    print(f"{'model':9} {'batch':>5} {'G ms':>8} {'inner ms':>9} {'inner/G':>8} {'overhead':>9} {'syncs':>6}")
    for row in rows:
        syncs = "-" if row["host_syncs_per_outer_step"] is None else row["host_syncs_per_outer_step"]
        print(
            f"{row['model']:9} {row['batch']:>5} {row['G_ms']:8.3f} {row['inner_step_ms']:9.3f} "
            f"{row['inner_step_over_G']:8.2f} {100 * row['overhead_of_G']:8.1f}% {syncs!s:>6}"
        )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
