"""device and precision in train configs: bf16 and fp16 (with a scaler) on the CPU, a missing device refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localentropy.cli import main
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.training.config import parse_train_config
from localentropy.experiments.training.trainer import run_training

OPTIMIZERS = [
    {
        "kind": "entropy-sgd",
        "lr": 0.5,
        "options": {"gamma": 1.0, "inner_steps": 3, "momentum": 0.9},
        "sampler": "sgld",
        "sampler_options": {"step_size": 0.1, "temperature": 1e-8},
    },
    {"kind": "lpf-sgd", "lr": 0.1, "options": {"sigma": 1e-3, "n_samples": 2}},
    {"kind": "sam", "lr": 0.1, "options": {"rho": 0.05}},
    {"kind": "sgd", "lr": 0.1, "options": {"momentum": 0.9}},
]


def config(**top) -> dict:
    return {
        "name": "precision",
        "seed": 0,
        "batch_size": 64,
        "effective_epochs": 0.5,
        "data": {"source": "digits"},
        "model": {"name": "mlp", "options": {"hidden": [16]}},
        "flatness": {"measures": []},
        "optimizers": OPTIMIZERS,
        **top,
    }


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_a_cpu_run_in_mixed_precision_trains_and_records_both(tmp_path: Path, precision: str) -> None:
    train = parse_train_config(config(device="cpu", precision=precision), name="precision")
    path, state = run_training(train, tmp_path / "run")
    results = json.loads((path / "results.json").read_text())
    assert state == "fresh"
    assert results["device"] == "cpu" and results["precision"] == precision
    assert results["config"]["device"] == "cpu" and results["config"]["precision"] == precision
    assert [r["status"] for r in results["records"]] == ["ok"] * len(OPTIMIZERS)


def test_a_device_this_machine_lacks_is_refused_naming_it_before_anything_is_written(tmp_path: Path) -> None:
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has a CUDA device")
    train = parse_train_config(config(device="cuda:3"), name="precision")
    with pytest.raises(ConfigError, match=r"device: 'cuda:3' is not available here"):
        run_training(train, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_command_line_overrides_and_refuses_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    file = tmp_path / "precision.toml"
    file.write_text(
        "\n".join(
            [
                'name = "precision"',
                "batch_size = 64",
                "effective_epochs = 0.5",
                'data = { source = "digits" }',
                'model = { name = "mlp", options = { hidden = [16] } }',
                "flatness = { measures = [] }",
                "[[optimizers]]",
                'kind = "sgd"',
                "lr = 0.1",
            ]
        )
    )
    out = tmp_path / "run"
    assert main(["train", str(file), "--out", str(out), "--device", "cpu", "--precision", "bf16-mixed", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["device"], results["precision"]) == ("cpu", "bf16-mixed")
    if not torch.cuda.is_available():
        assert main(["train", str(file), "--out", str(tmp_path / "cuda"), "--device", "cuda"]) == 2
        assert "device: 'cuda' is not available here" in capsys.readouterr().err
    assert main(["train", str(file), "--device", "gpu"]) == 2
    assert "argument --device: expected" in capsys.readouterr().err


def test_fp16_with_gradient_clipping_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"clip_grad_norm: not with precision = '16-mixed'"):
        parse_train_config(config(precision="16-mixed", clip_grad_norm=1.0), name="precision")
