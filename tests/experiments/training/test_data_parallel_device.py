"""The device of data-parallel ranks: gloo on the CPU, nccl with one GPU per rank, the rest refused naming the field.

nccl itself needs CUDA devices; these tests check the choice of backend and device with torch.cuda and
torch.distributed's entry points replaced, and the refusals on this machine as they are.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from localentropy.cli import main
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.training import parallel
from localentropy.experiments.training.config import parse_train_config
from localentropy.experiments.training.launch import check_data_parallel
from localentropy.experiments.training.parallel import Ranks, backend_for


def train_config(device: str):
    return parse_train_config(
        {
            "name": "ranks",
            "batch_size": 64,
            "effective_epochs": 0.5,
            "data": {"source": "digits"},
            "model": {"name": "mlp", "options": {"hidden": [16]}},
            "flatness": {"measures": []},
            "device": device,
            "optimizers": [{"kind": "sgd", "lr": 0.1}],
        },
        name="ranks",
    )


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_backend_follows_the_device() -> None:
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda", 1)) == "nccl"


def test_cpu_and_auto_without_cuda_train_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 0)
    assert check_data_parallel(train_config("cpu"), None, 2) == "cpu"
    assert check_data_parallel(train_config("auto"), None, 2) == "cpu"


def test_cuda_gives_every_local_rank_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    assert check_data_parallel(train_config("cuda"), None, 2) == "cuda"
    assert check_data_parallel(train_config("auto"), None, 2) == "cuda"
    with pytest.raises(ConfigError, match=r"device: 'cuda' with 3 data-parallel processes .* needs 3 CUDA devices"):
        check_data_parallel(train_config("cuda"), None, 3)


@pytest.mark.parametrize("device", ["cuda:1", "mps"])
def test_one_named_device_for_every_rank_is_refused_with_the_allowed_values(device: str) -> None:
    with pytest.raises(ConfigError, match=rf"device: '{device}': data-parallel training .* takes \"cpu\" \(gloo\)"):
        check_data_parallel(train_config(device), None, 2)


def test_a_cuda_rank_sets_its_device_then_joins_with_nccl(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(parallel.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        parallel.dist, "init_process_group", lambda backend, timeout: calls.append(("init", backend, timeout))
    )
    monkeypatch.setattr(parallel.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(parallel.dist, "get_world_size", lambda: 2)
    ranks = Ranks.start(30.0, 10, torch.device("cuda", 1))
    assert calls[0] == ("set_device", torch.device("cuda", 1))
    assert calls[1][:2] == ("init", "nccl") and calls[1][2].total_seconds() == 30.0
    assert (ranks.rank, ranks.world_size, ranks.distributed) == (1, 2, True)


def test_a_cpu_rank_joins_with_gloo(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(parallel.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(parallel.dist, "init_process_group", lambda backend, timeout: calls.append(("init", backend)))
    monkeypatch.setattr(parallel.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(parallel.dist, "get_world_size", lambda: 2)
    Ranks.start(30.0, 10)
    assert calls == [("init", "gloo")]


def test_the_command_line_refuses_cuda_ranks_without_gpus_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    file = tmp_path / "ranks.toml"
    file.write_text(
        "\n".join(
            [
                'name = "ranks"',
                'device = "cuda"',
                "batch_size = 64",
                "effective_epochs = 0.5",
                'data = { source = "digits" }',
                'model = { name = "mlp", options = { hidden = [16] } }',
                "[[optimizers]]",
                'kind = "sgd"',
                "lr = 0.1",
            ]
        )
    )
    assert main(["train", str(file), "--out", str(tmp_path / "run"), "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert "device: 'cuda' with 2 data-parallel processes on this machine needs 2 CUDA devices" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
