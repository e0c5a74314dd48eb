"""Every python example of docs/optimizers.md runs as written, in some test.

The framework recipes run in their own test files (each extracts its block with ``doc_example``); the three
snippets that leave names to the reader (the plain training loop, the fp16 recipe, the PyTorch port as options)
run here with those names defined. A new example in the docs fails ``test_every_example_is_run_by_a_test`` until
a test runs it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from localentropy.entropy import EntropySGD
from localentropy.samplers import MomentumSGLD
from tests.entropy.optim.docs import doc_example, doc_examples

RUN_BY = {
    "## Dropping EntropySGD into a training loop": "test_docs_recipes.py::test_the_plain_training_loop_runs",
    "### PyTorch Lightning": "test_lightning.py::test_the_documented_example_runs",
    "### Hugging Face accelerate": "test_accelerate.py::test_the_documented_example_runs",
    "### Hugging Face Trainer": "test_hf_trainer.py::test_the_documented_example_runs",
    "## Presets: the paper, the authors' Lua code, the PyTorch port": (
        "test_docs_recipes.py::test_the_pytorch_port_as_options_builds_and_steps"
    ),
    "## Mixed precision (torch.amp)": "test_docs_recipes.py::test_the_fp16_recipe_runs",
    "## Parle: replicas that communicate once per outer step": (
        "test_parle.py::test_the_documented_example_runs_as_one_replica"
    ),
}


def run(heading: str, **names) -> dict:
    namespace = dict(names)
    exec(compile(doc_example(heading), "docs/optimizers.md", "exec"), namespace)
    return namespace


def test_every_example_is_run_by_a_test() -> None:
    headings = [heading for heading, _ in doc_examples()]
    unrun = [h for h in headings if not any(h.startswith(known) for known in RUN_BY)]
    assert not unrun, f"python examples in docs/optimizers.md that no test runs: {unrun}"
    assert len(headings) == len(RUN_BY)  # one example per section


def test_the_plain_training_loop_runs(capsys) -> None:
    torch.manual_seed(0)
    train_set = TensorDataset(torch.randn(64, 10), torch.randint(0, 2, (64,)))
    names = {
        "model": nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2)),
        "train_set": train_set,
        "train_loader": DataLoader(train_set, batch_size=16, shuffle=True),
        "budget": 20,
    }
    namespace = run("## Dropping EntropySGD into a training loop", **names)
    assert namespace["opt"].grad_evals == namespace["closure"].calls == 20 and namespace["opt"].outer_steps == 4
    assert torch.isfinite(namespace["loss"])
    assert "5.0 effective epochs; 20 gradient evaluations" in capsys.readouterr().out


def test_the_pytorch_port_as_options_builds_and_steps() -> None:
    model = nn.Linear(3, 1)
    names = {"params": model.parameters(), "eta": 0.1, "g0": 0.03, "L": 4, "eps": 1e-3, "EntropySGD": EntropySGD}
    source = doc_example("## Presets: the paper, the authors' Lua code, the PyTorch port")
    opt = eval(compile(source, "docs/optimizers.md", "eval"), {**names, "MomentumSGLD": MomentumSGLD})
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def closure() -> torch.Tensor:
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    assert opt.grad_evals == 4 and opt.param_groups[0]["momentum"] == pytest.approx(0.9)


@pytest.mark.filterwarnings("ignore:GradScaler is going to stop passing itself:FutureWarning")  # see the docs
def test_the_fp16_recipe_runs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
    data = DataLoader(TensorDataset(torch.randn(64, 10), torch.randint(0, 2, (64,))), batch_size=8)
    names = {
        "torch": torch,
        "device": "cpu",
        "model": model,
        "criterion": nn.functional.cross_entropy,
        "batches": iter([batch for _ in range(3) for batch in data]),
        "opt": EntropySGD(model.parameters(), lr=0.1, gamma=1.0, inner_steps=3),
        "steps": 4,
    }
    namespace = run("## Mixed precision (torch.amp)", **names)
    assert namespace["opt"].outer_steps == 4 and namespace["opt"].grad_evals == 12  # no overflow at this size
    assert torch.isfinite(namespace["loss"]) and namespace["scaler"].get_scale() > 0
