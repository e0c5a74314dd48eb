"""Cost of one sampler step, in units of one gradient evaluation G, on the paper's MNIST MLP.

    python benchmarks/bench_samplers.py [--repeats N] [--warmup N] [--json [PATH]] [--threads 2]
                                        [--device cpu|cuda] [--hidden 1024] [--batch 128]

(the script is a thin wrapper of :func:`main`; ``python -m localentropy.experiments.speed.samplers`` is the same).

G is ``zero_grad + forward + backward`` (mean cross-entropy) of a 784-H-H-10 ReLU MLP (H = 1024 by default,
the paper's "mnistfc") at one batch of random data. A sampler row times ``zero_grad + forward + backward +
sampler.step(state, [p.grad for p in params], generator)`` with the state initialised on
``list(model.parameters())``, so a row's ratio to G is the whole cost of one step, gradient included:
ratio - 1 is the sampler's own overhead.

Timing is interleaved: each repeat times G once and every row once, in an order that rotates from repeat to
repeat, so machine noise (other processes, frequency changes) falls on all rows alike. Each row's time is
divided by the same repeat's G, and the table reports the median of these ratios over the repeats (after
warm-up), their interquartile range, and the median time in ms. No timing is asserted anywhere: the numbers
describe one machine.

Peers (``posteriors``) are imported if installed; a missing peer gives a row with a note and no timing.
posteriors computes its own gradient (``torch.func.grad`` of a ``log_posterior``) inside ``update``, so its
step is directly comparable with our gradient + step rows.
"""

from __future__ import annotations

import argparse
import copy
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from localentropy.experiments.core.cpuload import LoadMeter, load_average
from localentropy.experiments.speed.timing import Row, finish_report, format_table, machine_info, measure, summarise
from localentropy.samplers import available_samplers, make_sampler, sampler_class, sampler_hyperparameters

DEFAULT_JSON = Path("benchmarks") / "results" / "samplers.json"  # the script passes the path beside it
TEMPERATURE = 1e-4

# Small step sizes at which 10^3 steps on random data keep the network's weights of their initial size.
# A registered sampler not listed here gets DEFAULT_SETTINGS; wrappers and samplers that need more than a
# gradient are built by SPECIAL_BUILDERS below. A sampler that cannot be built or stepped gives a row with a
# note instead of stopping the benchmark.
SAMPLER_SETTINGS: dict[str, dict[str, Any]] = {
    "sgld": {"step_size": 1e-3},
    "sghmc": {"step_size": 1e-3, "friction": 0.1},
    "psgld": {"step_size": 1e-4},
    "msgld": {"step_size": 1e-4},
    "sgnht": {"step_size": 1e-4},
    "baoab": {"step_size": 1e-3},
    "mala": {"step_size": 1e-4},
}
DEFAULT_SETTINGS: dict[str, Any] = {"step_size": 1e-4}
CYCLICAL_BASE = "sgld"


def make_mlp(hidden: int, n_in: int = 784, n_out: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
    )


def gradient_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """The unit G: zero_grad + forward + backward of the mean cross-entropy."""
    model.zero_grad()
    cross_entropy(model(x), y).backward()


def model_and_batch(hidden: int, batch: int, device: torch.device, seed: int) -> tuple[nn.Module, Any, Any]:
    """The MLP (initialised from ``seed``) and one batch of random data (its own generator, the same seed)."""
    torch.manual_seed(seed)
    base = make_mlp(hidden).to(device)
    data_gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, 784, generator=data_gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=data_gen).to(device)
    return base, x, y


def try_once(rows: list[Row]) -> None:
    """One trial step each: a row that cannot run is reported (its note), not fatal."""
    for row in rows:
        if row.step is not None:
            try:
                row.step()
            except Exception as exc:
                row.step, row.note = None, f"failed: {type(exc).__name__}: {exc}"


def sampler_settings(name: str, noise: str, model: nn.Module, x, y) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(label, hyperparameters given to make_sampler, hyperparameters as reported) for a registered sampler."""
    accepted = sampler_hyperparameters(name)
    settings = dict(SAMPLER_SETTINGS.get(name, DEFAULT_SETTINGS))
    settings.update({k: v for k, v in (("temperature", TEMPERATURE), ("noise", noise)) if k in accepted})
    label = name if noise == "gaussian" else f"{name}, {noise}"
    reported = dict(settings)
    cls = sampler_class(name)
    if cls.wraps_sampler:  # a wrapper: cosine cyclical step size around a base sampler, sampling phase only
        base = {"name": CYCLICAL_BASE, **SAMPLER_SETTINGS[CYCLICAL_BASE], "temperature": TEMPERATURE, "noise": noise}
        settings = {"sampler": base, "n_cycles": 4, "total_steps": 10**6}
        reported = dict(settings)
        label = f"cyclical ({CYCLICAL_BASE})" if noise == "gaussian" else f"cyclical ({CYCLICAL_BASE}), {noise}"
    elif cls.needs_potential:  # MALA: U at a list of tensors, the same loss as the gradient's
        names = [n for n, _ in model.named_parameters()]

        def potential(position: list[torch.Tensor]) -> torch.Tensor:
            params = dict(zip(names, position, strict=True))
            return cross_entropy(torch.func.functional_call(model, params, (x,)), y)

        settings["potential"] = potential
        reported["potential"] = "mean cross-entropy at the batch (functional_call)"
    return label, settings, reported


def our_row(name: str, base: nn.Module, x, y, generator, noise: str = "gaussian", **overrides: Any) -> Row:
    """One step of a registered sampler on a copy of the model, gradient included."""
    model = copy.deepcopy(base)
    params = list(model.parameters())
    label, settings, reported = sampler_settings(name, noise, model, x, y)
    settings.update(overrides)
    reported.update(overrides)
    if overrides.get("temperature") == 0:
        label = f"{name}, T=0 (no noise)"
    try:
        sampler = make_sampler(name, **settings)
    except ValueError as exc:
        why = "not applicable" if noise not in sampler_class(name).noises else "failed"
        return Row(label, "localentropy", reported, None, note=f"{why}: {exc}", sampler=name, noise=noise)
    holder = {"state": sampler.init(params)}

    def step() -> None:
        gradient_step(model, x, y)
        with torch.no_grad():  # the samplers update leaf tensors that require grad, in place
            holder["state"] = sampler.step(holder["state"], [p.grad for p in params], generator)

    return Row(label, "localentropy", reported, step, sampler=name, noise=noise)


def sgd_row(base: nn.Module, x, y, lr: float) -> Row:
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def step() -> None:
        gradient_step(model, x, y)
        opt.step()

    return Row("torch.optim.SGD", "reference", {"lr": lr}, step)


def posteriors_rows(base: nn.Module, x, y) -> list[Row]:
    settings = {
        "posteriors sgld": {"lr": 1e-3, "temperature": TEMPERATURE},
        "posteriors sghmc": {"lr": 1e-3, "alpha": 0.1, "temperature": TEMPERATURE, "momenta": 0.0},
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # posteriors 0.1.3 warns on import (tensordict FutureWarnings)
            import posteriors
            from posteriors.sgmcmc import sghmc, sgld
    except ImportError as exc:
        note = f"not installed: posteriors ({exc})"
        return [Row(name, "peer", s, None, note=note) for name, s in settings.items()]

    version = getattr(posteriors, "__version__", "?")
    model = copy.deepcopy(base)

    def log_posterior(params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]):
        inputs, labels = batch
        logits = torch.func.functional_call(model, params, (inputs,))
        return -cross_entropy(logits, labels), logits  # (log_prob, aux tensor)

    rows = []
    for (name, s), module in zip(settings.items(), (sgld, sghmc), strict=True):
        transform = module.build(log_posterior, **s)
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        holder = {"state": transform.init(params)}

        def step(transform=transform, holder=holder) -> None:
            out = transform.update(holder["state"], (x, y), inplace=True)
            # 0.1.3 returns (state, aux); older releases returned the state alone.
            holder["state"] = out[0] if isinstance(out, tuple) else out

        rows.append(Row(name, "peer", {**s, "inplace": True, "version": version}, step))
    return rows


def build_rows(hidden: int, batch: int, device: torch.device, seed: int) -> tuple[Row, list[Row]]:
    base, x, y = model_and_batch(hidden, batch, device, seed)
    generator = torch.Generator(device=device).manual_seed(seed + 1)

    g_model = copy.deepcopy(base)
    unit = Row("G (zero_grad + forward + backward)", "unit", {}, lambda: gradient_step(g_model, x, y))

    rows: list[Row] = []
    for noise in ("gaussian", "rademacher"):
        rows.extend(our_row(name, base, x, y, generator, noise) for name in available_samplers())
    rows.append(our_row("sgld", base, x, y, generator, temperature=0.0))
    rows.append(sgd_row(base, x, y, lr=1e-3))
    rows.extend(posteriors_rows(base, x, y))
    try_once(rows)
    return unit, rows


def parse_args(
    argv: list[str] | None, default_json: Path = DEFAULT_JSON, prog: str | None = None
) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=300, help="measured repeats (default 300: about 1.5 minutes)")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured repeats first (default 10)")
    p.add_argument(
        "--json", nargs="?", const=str(default_json), default=None, help=f"write JSON (default path {default_json})"
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="stop measuring after the repeat that passes this many seconds (default 120, for a slow machine)",
    )
    p.add_argument(
        "--max-other-cores",
        type=float,
        default=None,
        help="drop (and retake) a repeat in which other processes used more than this many cores (default: keep all)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--hidden", type=int, default=1024, help="width of both hidden layers (default 1024)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.max_seconds > 0:
        p.error("--max-seconds must be > 0")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1 or args.hidden < 1 or args.batch < 1:
        p.error("--repeats, --threads, --hidden and --batch must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None, default_json: Path = DEFAULT_JSON, prog: str | None = None) -> dict[str, Any]:
    """The sampler benchmark's command: measure, print the table, write the JSON with ``--json``."""
    args = parse_args(argv, default_json, prog)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    load_before = load_average()
    try:
        unit, rows = build_rows(args.hidden, args.batch, device, args.seed)
        dropped: list[int] = []
        with LoadMeter() as load:
            measured = measure(
                unit, rows, args.repeats, args.warmup, device, args.max_seconds, args.max_other_cores, dropped
            )
    finally:
        torch.set_num_threads(previous_threads)

    results = summarise(unit, rows)
    wall, other_cores = load.wall, load.other_cores
    n_params = sum(p.numel() for p in make_mlp(args.hidden).parameters())
    report = {
        "benchmark": "sampler step cost in units of G",
        "model": f"MLP 784-{args.hidden}-{args.hidden}-10 (ReLU), {n_params} parameters",
        "batch": args.batch,
        "repeats": measured,
        "repeats_requested": args.repeats,
        "repeats_dropped_for_contention": dropped[0],
        "warmup": args.warmup,
        "seed": args.seed,
        "temperature": TEMPERATURE,
        "G_median_ms": results[0]["median_ms"],
        "measure_wall_s": wall,
        "machine": {
            **machine_info(device, args.threads),
            "loadavg_1min_before": load_before,
            # Cores' worth of CPU that other processes used while we measured (0 on a quiet machine).
            "other_processes_cores": other_cores,
        },
        "rows": results,
    }

    m = report["machine"]
    print(f"{report['model']}, batch {args.batch}, {measured} repeats after {args.warmup} warm-up, interleaved")
    g = report["G_median_ms"]
    g_text = "not measured" if g is None else f"{g:.2f} ms"
    print(f"G = {g_text} (median); ratios are medians over repeats of row time / same-repeat G")
    print()
    print(format_table(results))
    print()
    where = m.get("gpu", m["cpu"])
    print(
        f"machine: {where} ({m['cpu_count']} CPUs), device {m['device']}, torch {m['torch']}, "
        f"{m['threads']} threads, Python {m['python']}, localentropy {m['localentropy']}"
    )
    if other_cores is not None:
        print(f"other processes used {other_cores:.2f} cores on average while this measured")
    cores = os.cpu_count() or 1
    if device.type == "cpu" and other_cores is not None and other_cores + args.threads > cores + 0.25:
        print(
            f"warning: other processes competed with the {args.threads} threads on {cores} CPUs; ratios can be "
            "distorted (a descheduled thread stalls every parallel kernel). Rerun on a quiet machine."
        )
    return finish_report(report, args.json)


if __name__ == "__main__":
    main()
