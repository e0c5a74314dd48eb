"""Hash the parameters the local-entropy optimizers reach, for every noise stream, sampler and inner-loop option.

Why: a refactor of the inner loop must not change a single number. Run this at the old and the new commit and
compare the two outputs line by line (``diff``); every line is one configuration and the SHA-256 of its final
parameters (and of its ``state_dict`` tensors, which hold the warm chains and the chunk generators).

    python benchmarks/hash_inner_loop.py > new.txt   # about 16 s on 2 cores

The model has a group large enough to be chunked (two chunks of the "chunked-v1" stream), a small group that stays
on the serial path, a frozen parameter and a parameter the loss does not use (skipped, as torch skips it).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from localentropy.entropy import LPFSGD, EntropyAdam, EntropySGD, Parle
from localentropy.samplers import available_samplers, sampler_class

STEP_SIZES = {"sghmc": 0.01, "baoab": 0.01, "sgnht": 0.01}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 2100)  # 136,500 entries with its bias: chunked into two chunks with the head
        self.head = nn.Linear(2100, 64)
        self.small = nn.Linear(64, 8)  # its own group: below the chunking threshold
        self.unused = nn.Linear(3, 3)  # no gradient: skipped
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.small(torch.relu(self.head(torch.relu(self.body(x))))))


def sampler_options(name: str, noise: str) -> dict[str, Any]:
    options: dict[str, Any] = {"step_size": STEP_SIZES.get(name, 0.02), "temperature": 1e-3, "noise": noise}
    if name == "cyclical":
        inner = {"step_size": 0.02, "temperature": 1e-3, "noise": noise}
        options = {"sampler": {"name": "sgld", **inner}, "n_cycles": 2, "total_steps": 9}
    return options


def configurations() -> Iterator[tuple[str, Callable[[list[dict[str, Any]]], torch.optim.Optimizer]]]:
    gradient_samplers = [n for n in available_samplers() if not sampler_class(n).needs_potential]
    for stream, name, noise, warm in itertools.product(
        ("serial-v0", "chunked-v1"), gradient_samplers, ("gaussian", "rademacher"), (False, True)
    ):
        if noise not in sampler_class(name).noises:
            continue
        options = sampler_options(name, noise)
        yield (
            f"EntropySGD {stream} {name} {noise} warm={warm}",
            lambda groups, s=stream, n=name, o=options, w=warm: EntropySGD(
                groups,
                lr=0.1,
                gamma=0.03,
                sampler=n,
                sampler_options=o,
                inner_steps=3,
                warm_start=w,
                weight_decay=1e-4,
                noise_stream=s,
                generator=torch.Generator().manual_seed(5),
            ),
        )
    for stream, preset in itertools.product(("serial-v0", "chunked-v1"), ("paper", "authors")):
        yield (
            f"EntropySGD {stream} preset={preset}",
            lambda groups, s=stream, p=preset: EntropySGD(
                groups,
                lr=0.1,
                gamma=0.03,
                preset=p,
                sampler_options={"step_size": 0.02, "noise_scale": 1e-3},
                inner_steps=3,
                noise_stream=s,
                generator=torch.Generator().manual_seed(6),
            ),
        )
    for stream in ("serial-v0", "chunked-v1"):
        yield (
            f"EntropyAdam {stream} msgld after_momentum scoping",
            lambda groups, s=stream: EntropyAdam(
                groups,
                lr=1e-3,
                gamma=0.03,
                scoping=1e-2,
                sampler="msgld",
                sampler_options={"step_size": 0.02, "temperature": 1e-3, "momentum": 0.5},
                coupling="after_momentum",
                averaging="uniform",
                inner_steps=3,
                noise_stream=s,
                generator=torch.Generator().manual_seed(7),
            ),
        )
        yield (
            f"Parle {stream}",
            lambda groups, s=stream: Parle(
                groups,
                lr=0.1,
                gamma=0.03,
                rho=0.1,
                inner_steps=3,
                sampler_options={"step_size": 0.02, "temperature": 1e-3},
                noise_stream=s,
                generator=torch.Generator().manual_seed(8),
            ),
        )
    yield (
        "LPFSGD",
        lambda groups: LPFSGD(groups, lr=0.1, sigma=1e-3, n_samples=3, generator=torch.Generator().manual_seed(9)),
    )


def digest(tensors: Iterator[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def state_tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from state_tensors(value[key])
    elif isinstance(value, list | tuple):
        for item in value:
            yield from state_tensors(item)


def run(make: Callable[[list[dict[str, Any]]], torch.optim.Optimizer], outer_steps: int) -> tuple[str, str]:
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(32, 64)
    y = torch.randint(0, 8, (32,))
    groups = [
        {"params": [*model.body.parameters(), *model.head.parameters(), *model.unused.parameters()]},
        {"params": [*model.small.parameters(), *model.frozen.parameters()]},
    ]
    optimizer = make(groups)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(outer_steps):
        optimizer.step(closure)
    return digest(iter(model.parameters())), digest(state_tensors(optimizer.state_dict()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outer-steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for label, make in configurations():
        params, state = run(make, args.outer_steps)
        print(f"{label}: params {params} state {state}", flush=True)


if __name__ == "__main__":
    main()
