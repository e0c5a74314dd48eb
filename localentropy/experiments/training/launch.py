"""``localentropy train --nproc N``: the launching process, and the entry of each rank (docs/distributed.md)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

import torch

from localentropy.data.text import TEXT_SOURCES
from localentropy.experiments.core.config import ConfigError, toml_text
from localentropy.experiments.core.lifeline import die_with_parent, launcher_parent
from localentropy.experiments.core.rundir import RunDirectory
from localentropy.experiments.training.config import TrainConfig, load_train_config
from localentropy.experiments.training.parallel import (
    DEFAULT_DRIFT_CHECK,
    DEFAULT_TIMEOUT,
    PREPARED_ENV,
    Ranks,
    launch_command,
    run_ranks,
)
from localentropy.experiments.training.trainer import default_out, load_splits, run_training


def check_data_parallel(config: TrainConfig, source: str | None, local_world_size: int = 1) -> str:
    """Refuse what the data-parallel trainer does not support; return the kind of device its ranks use.

    Token streams are refused (truncated BPTT keeps hidden state). ``device``: "cpu" trains every rank on the CPU
    (gloo); "cuda" gives each of the ``local_world_size`` ranks on this machine its own GPU, ``cuda:LOCAL_RANK``
    (nccl); "auto" is "cuda" when this machine has CUDA, else "cpu". "cuda:N" (one GPU for every rank) and "mps"
    (no torch.distributed backend) are refused, naming the field.
    """
    if config.data.source in TEXT_SOURCES:
        raise ConfigError(
            [
                f"data.source: {config.data.source!r} is a token stream; data-parallel training "
                "(--nproc > 1 or torchrun) takes labelled-example sources only"
            ],
            source,
        )
    kind = config.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind not in ("cpu", "cuda"):
        raise ConfigError(
            [
                f'device: {config.device!r}: data-parallel training (--nproc > 1 or torchrun) takes "cpu" (gloo), '
                '"cuda" (nccl, one GPU per rank: cuda:LOCAL_RANK) or "auto"'
            ],
            source,
        )
    count = torch.cuda.device_count() if kind == "cuda" and torch.cuda.is_available() else 0
    if kind == "cuda" and count < local_world_size:
        have = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise ConfigError(
            [
                f"device: 'cuda' with {local_world_size} data-parallel processes on this machine needs "
                f'{local_world_size} CUDA devices (one per rank); it has {have}: use "cpu" or fewer processes'
            ],
            source,
        )
    return kind


def launch_training(
    config_path: str | Path,
    out: str | Path | None,
    nproc: int,
    *,
    force: bool = False,
    drift_every: int = DEFAULT_DRIFT_CHECK,
    timeout: float = DEFAULT_TIMEOUT,
    output: Path | None = None,
    overrides: dict[str, str] | None = None,
) -> tuple[Path, str]:
    """Validate, prepare and lock the run directory here, run ``nproc`` ranks through torch's launcher, wait.

    ``output``: a file for the launcher's and the ranks' output (default: this process's stdout and stderr).
    ``overrides``: the command line's ``device`` / ``precision``, applied here and passed on to every rank.

    Returns (directory, "fresh" | "resume" | "skip"); a failed rank raises
    :class:`~localentropy.experiments.training.parallel.RankFailedError` (the directory is then not complete).
    """
    config = load_train_config(config_path).model_copy(update=overrides or {})
    check_data_parallel(config, str(config_path), nproc)
    out_dir = RunDirectory(out if out is not None else default_out(config))
    out_dir.check_free()
    if not out_dir.complete or force:
        load_splits(config, str(config_path))  # a bad data path is refused before anything starts
    state = out_dir.prepare(config.as_dict(), force=force)
    try:
        if state == "skip":
            return out_dir.path, state
        command = launch_command(Path(config_path), out_dir.path, nproc, drift_every, timeout, overrides)
        run_ranks(command, state, out_dir.path, output)
        if not out_dir.complete:
            raise RuntimeError(f"the ranks exited without error but {out_dir.path} is not marked complete")
    finally:
        out_dir.release()
    return out_dir.path, state


def launch_table(config: dict[str, Any], out: str | Path, nproc: int, log: TextIO | None = None) -> tuple[Path, str]:
    """:func:`launch_training` of a config given as a table (a sweep's run, a tuning trial): written as TOML into a
    temporary directory for the ranks to read; the launcher's and the ranks' output goes to ``log`` (whether the
    ranks succeed or fail)."""
    with tempfile.TemporaryDirectory(prefix="ranks-") as tmp:
        path, output = Path(tmp) / f"{config.get('name', 'run')}.toml", Path(tmp) / "ranks.log"
        path.write_text(toml_text(config))
        try:
            return launch_training(path, out, nproc, output=output)
        finally:
            if log is not None and output.is_file():
                log.write(output.read_text())


def run_rank(
    config_path: str | Path,
    out: str | Path | None,
    *,
    force: bool = False,
    drift_every: int = DEFAULT_DRIFT_CHECK,
    timeout: float = DEFAULT_TIMEOUT,
    overrides: dict[str, str] | None = None,
) -> tuple[Path, str, bool]:
    """One rank under torch's launcher: join the group, train, leave. Returns (directory, state, writer).

    ``overrides``: the command line's ``device`` / ``precision`` (checked by their option types). The rank dies
    (SIGKILL) with the launcher that started it: a launcher killed outright leaves no rank behind."""
    die_with_parent(launcher_parent())
    config = load_train_config(config_path).model_copy(update=overrides or {})
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    kind = check_data_parallel(config, str(config_path), local_world_size)
    device = torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")
    config = config.model_copy(update={"device": str(device)})  # "auto" resolved: every rank on the same kind
    prepared = PREPARED_ENV in os.environ  # the launching process prepared the directory: --force was done there
    ranks = Ranks.start(timeout, drift_every, device)
    try:
        with contextlib.ExitStack() as stack:
            progress = None if ranks.writer else stack.enter_context(open(os.devnull, "w"))
            path, state = run_training(config, out, force=force and not prepared, progress=progress, ranks=ranks)
        return path, state, ranks.writer
    finally:
        ranks.stop()
