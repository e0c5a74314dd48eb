"""The GPU benchmark script runs end to end (on the CPU here: it checks the script, not a GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_inner_step.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_inner_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_script_writes_its_table_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    assert _load().main(["--device", "cpu", "--repeats", "2", "--batches", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(r["model"], r["batch"]) for r in report["rows"]] == [("mnistfc", 4), ("convnet", 4)]
    assert all(r["inner_step_ms"] > 0 and r["host_syncs_per_outer_step"] is None for r in report["rows"])


def test_without_a_gpu_the_script_says_so_and_exits_2(capsys) -> None:
    module = _load()
    if module.torch.cuda.is_available():  # pragma: no cover (a GPU machine)
        return
    assert module.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().out
