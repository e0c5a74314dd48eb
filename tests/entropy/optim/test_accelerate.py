"""EntropySGD under Hugging Face accelerate: the recipe of docs/optimizers.md.

The recipe: ``accelerator.prepare`` the model, the optimizer and a loader whose batch holds ``inner_steps``
minibatches, and ``opt.step(SplitBatchClosure(batch, inner_steps, batch_loss, backward=accelerator.backward))``.
accelerate's ``gradient_accumulation_steps > 1`` skips ``optimizer.step`` (and with it the closure) on all but
one iteration per window, so the optimizer refuses it; accumulation inside each inner step is
``SplitBatchClosure(..., micro_batches=m)``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from localentropy.entropy import EntropySGD, SplitBatchClosure

accelerate = pytest.importorskip("accelerate")

INNER_STEPS, MINIBATCH, N = 3, 4, 48


pytestmark = pytest.mark.usefixtures("accelerate_state")  # accelerate's singletons reset around each test


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(N, 4, generator=g), torch.randint(0, 2, (N,), generator=g), torch.arange(N))


def build(seed: int = 0, **accelerator_options):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = EntropySGD(  # built before prepare moves the model: the generator follows it to its device
        model.parameters(),
        lr=0.1,
        gamma=1.0,
        inner_steps=INNER_STEPS,
        momentum=0.9,
        sampler="sgld",
        sampler_options={"step_size": 0.05, "temperature": 1e-4},
    )
    loader = DataLoader(dataset(), batch_size=INNER_STEPS * MINIBATCH, shuffle=False, drop_last=True)
    accelerator = accelerate.Accelerator(cpu=True, **accelerator_options)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    return accelerator, model, opt, loader


def train(accelerator, model, opt, loader, seen: list | None = None, micro_batches: int = 1, skip: int = 0):
    def batch_loss(minibatch):
        inputs, targets, index = minibatch
        if seen is not None:
            seen.append(index.tolist())
        return nn.functional.cross_entropy(model(inputs), targets)

    for i, batch in enumerate(loader):
        if i < skip:
            continue
        closure = SplitBatchClosure(
            batch, INNER_STEPS, batch_loss, backward=accelerator.backward, micro_batches=micro_batches
        )
        opt.step(closure)


def test_the_recipe_gives_every_inner_step_a_fresh_minibatch() -> None:
    accelerator, model, opt, loader = build()
    seen: list = []
    train(accelerator, model, opt, loader, seen)
    inner_opt = opt.optimizer
    assert inner_opt.outer_steps == len(loader) and inner_opt.grad_evals == len(loader) * INNER_STEPS
    for step in range(inner_opt.outer_steps):
        inner = seen[step * INNER_STEPS : (step + 1) * INNER_STEPS]
        assert len({tuple(m) for m in inner}) == INNER_STEPS and all(len(m) == MINIBATCH for m in inner)
    assert sorted(i for m in seen for i in m) == list(range(N))


def test_micro_batches_accumulate_the_gradient_of_each_inner_minibatch() -> None:
    """Accumulating over 2 slices (gradients summed across backward calls inside one closure call, zeroed
    between closure calls) gives the step of whole minibatches, up to rounding."""
    whole, sliced = build(), build()
    train(*whole)
    seen: list = []
    train(*sliced, seen=seen, micro_batches=2)
    assert len(seen) == 2 * len(whole[3]) * INNER_STEPS and all(len(m) == MINIBATCH // 2 for m in seen)
    for p, q in zip(whole[1].parameters(), sliced[1].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_accelerate_gradient_accumulation_is_refused_clearly() -> None:
    accelerator, model, opt, loader = build(gradient_accumulation_steps=2)
    batch = next(iter(loader))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="gradient_accumulation_steps=2"):
        for batch in loader:
            with accelerator.accumulate(model):
                opt.step(SplitBatchClosure(batch, INNER_STEPS, lambda b: model(b[0]).sum()))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_save_state_and_load_state_resume_bit_identically(tmp_path, accelerate_state) -> None:
    straight = build()
    train(*straight)
    half = len(straight[3]) // 2

    first = build()
    accelerator, model, opt, loader = first
    for i, batch in enumerate(loader):
        if i == half:
            break
        opt.step(SplitBatchClosure(batch, INNER_STEPS, lambda b: nn.functional.cross_entropy(model(b[0]), b[1])))
    accelerator.save_state(tmp_path / "state")

    accelerate_state()
    resumed = build(seed=7)  # other initial weights and generator seed: the state overwrites both
    resumed[0].load_state(tmp_path / "state")
    train(*resumed, skip=half)
    for p, q in zip(straight[1].parameters(), resumed[1].parameters(), strict=True):
        assert torch.equal(p, q)
    assert resumed[2].optimizer.outer_steps == len(straight[3])


def test_the_documented_example_runs(tmp_path, monkeypatch) -> None:
    from tests.entropy.optim.docs import doc_example

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(doc_example("### Hugging Face accelerate"), "docs/optimizers.md", "exec"), namespace)
    opt = namespace["opt"].optimizer
    assert opt.outer_steps == 2 * len(namespace["loader"]) and opt.grad_evals == opt.outer_steps * 5
    loss, closure = namespace["loss"], namespace["closure"]
    assert len(closure.losses) == 5 and loss is closure.losses[0] and torch.isfinite(loss)  # step returned None
    assert (tmp_path / "checkpoint").is_dir()
