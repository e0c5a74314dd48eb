"""EntropySGD under the Hugging Face Trainer: ``EntropyTrainer`` (localentropy.entropy.optim.hf_trainer).

The Trainer calls ``optimizer.step()`` without a closure; ``EntropyTrainer.training_step`` takes the whole step,
splitting the Trainer's batch into ``inner_steps`` minibatches. Checked here: every inner step gets its own
minibatch and the step equals the hand-written loop on the same minibatches (with the Trainer's gradient clipping
applied to every closure call), with and without the Trainer's gradient accumulation; the logs count gradient
evaluations; a run resumed from a checkpoint ends bit for bit where the uninterrupted run ends; fp16, batches
smaller than inner_steps and other optimizers are refused clearly.
Models are built in the test (nothing is downloaded).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localentropy.entropy import LPFSGD, EntropyAdam, EntropySGD

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import TrainingArguments

from localentropy.entropy.optim.hf_trainer import EntropyTrainer

INNER_STEPS, MINIBATCH, N = 3, 4, 48
STEPS_PER_EPOCH = N // (INNER_STEPS * MINIBATCH)


pytestmark = pytest.mark.usefixtures("accelerate_state")  # accelerate's singletons reset around each test


class Tiny(nn.Module):
    """A model as the Trainer calls it (keyword inputs, a dict with the loss); it records what each call reads."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.seen: list[list[int]] = []
        self.losses: list[float] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(index.tolist())
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, labels)
        self.losses.append(loss.item())
        return {"loss": loss, "logits": logits}


def dataset() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, 4, generator=g), torch.randint(0, 2, (N,), generator=g)
    return [{"x": x[i], "labels": y[i], "index": torch.tensor(i)} for i in range(N)]


def optimizer(model: nn.Module) -> EntropySGD:
    return EntropySGD(
        model.parameters(),
        lr=0.1,
        gamma=1.0,
        inner_steps=INNER_STEPS,
        momentum=0.9,
        sampler="sgld",
        sampler_options={"step_size": 0.05, "temperature": 1e-4},
    )


def arguments(tmp_path, **options) -> TrainingArguments:
    settings = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": INNER_STEPS * MINIBATCH,
        "num_train_epochs": 2,
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_drop_last": True,
        "save_strategy": "no",
        "logging_steps": 1,
        "seed": 0,
    }
    return TrainingArguments(**{**settings, **options})


def trainer(tmp_path, model: nn.Module | None = None, **options) -> EntropyTrainer:
    model = Tiny() if model is None else model
    return EntropyTrainer(
        model=model, args=arguments(tmp_path, **options), train_dataset=dataset(), optimizers=(optimizer(model), None)
    )


def clipped_closure(model: Tiny, data: list, minibatches: list[list[int]], max_norm: float):
    """A closure whose call k reads the examples ``minibatches[k]`` and clips the gradient at ``max_norm``."""
    remaining = iter(minibatches)

    def closure() -> torch.Tensor:
        rows = [data[i] for i in next(remaining)]
        loss = model(**{key: torch.stack([row[key] for row in rows]) for key in rows[0]})["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return loss.detach()

    return closure


@pytest.mark.parametrize("accumulation", [1, 2])
def test_each_inner_step_gets_its_own_minibatch_and_the_step_is_the_hand_written_loop(tmp_path, accumulation) -> None:
    """With gradient accumulation over k batches of 1/k the size, closure call j reads the j-th slice of each."""
    run = trainer(
        tmp_path,
        lr_scheduler_type="constant",
        max_grad_norm=0.5,
        gradient_accumulation_steps=accumulation,
        per_device_train_batch_size=INNER_STEPS * MINIBATCH // accumulation,
    )
    run.train()
    model, opt = run.model, run.entropy_optimizer
    steps = 2 * STEPS_PER_EPOCH
    assert opt.outer_steps == steps and opt.grad_evals == steps * INNER_STEPS
    # the examples of each closure call: the union of its `accumulation` forward passes
    passes = iter(model.seen)
    calls = [[i for _ in range(accumulation) for i in next(passes)] for _ in range(steps * INNER_STEPS)]
    inner = [calls[s * INNER_STEPS : (s + 1) * INNER_STEPS] for s in range(steps)]
    assert all(len({tuple(m) for m in step}) == INNER_STEPS for step in inner)  # distinct within a step
    assert all(len(set(m)) == MINIBATCH for m in calls)
    first_epoch = sorted(i for step in inner[:STEPS_PER_EPOCH] for m in step for i in m)
    assert first_epoch == list(range(N))  # an epoch reads every example once

    # The same minibatches through a hand-written loop, clipping every closure call's gradient at 0.5
    data, hand = dataset(), Tiny()  # Tiny() seeds torch: the optimizer draws the Trainer run's noise seed
    hand_opt = optimizer(hand)
    for step in inner:
        hand_opt.step(clipped_closure(hand, data, step, max_norm=0.5))
    for p, q in zip(model.parameters(), hand.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)

    # the logs: the loss at x (the first minibatch of the step) and the counters, at every step
    logs = [entry for entry in run.state.log_history if "loss" in entry]
    assert [entry["grad_evals"] for entry in logs] == [INNER_STEPS * (s + 1) for s in range(steps)]
    assert [entry["outer_steps"] for entry in logs] == list(range(1, steps + 1))
    at_x = torch.tensor(model.losses).reshape(steps, INNER_STEPS, accumulation)[:, 0].mean(dim=1)  # equal slices
    assert [entry["loss"] for entry in logs] == pytest.approx(at_x.tolist(), rel=1e-6)


def test_a_run_resumed_from_a_checkpoint_ends_where_the_uninterrupted_run_ends(tmp_path, accelerate_state) -> None:
    straight = trainer(tmp_path / "a", num_train_epochs=3, save_strategy="steps", save_steps=STEPS_PER_EPOCH + 2)
    straight.train()
    checkpoint = tmp_path / "a" / f"checkpoint-{STEPS_PER_EPOCH + 2}"  # mid-epoch: the Trainer skips 2 batches
    assert (checkpoint / "optimizer.pt").is_file()

    accelerate_state()
    torch.manual_seed(123)  # another noise seed for the fresh optimizer: the checkpoint's generator state wins
    resumed = trainer(tmp_path / "b", model=Tiny(seed=7), num_train_epochs=3)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert resumed.entropy_optimizer.grad_evals == straight.entropy_optimizer.grad_evals == 9 * STEPS_PER_EPOCH


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"per_device_train_batch_size": INNER_STEPS - 1}, "per_device_train_batch_size=2 cannot be split"),
        ({"fp16": True}, "fp16=True is not supported"),
    ],
)
def test_settings_the_inner_loop_cannot_honour_are_refused_clearly(tmp_path, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        trainer(tmp_path, **options).train()


@pytest.mark.parametrize(
    "build",
    [
        lambda params: EntropyAdam(params, lr=1e-2, gamma=1.0, inner_steps=INNER_STEPS),
        lambda params: LPFSGD(params, lr=0.1, sigma=1e-3, n_samples=INNER_STEPS),
    ],
    ids=["EntropyAdam", "LPFSGD"],
)
def test_the_other_optimizers_of_the_library_run_one_closure_call_per_minibatch(tmp_path, build) -> None:
    model = Tiny()
    opt = build(model.parameters())
    run = EntropyTrainer(
        model=model, args=arguments(tmp_path, num_train_epochs=1), train_dataset=dataset(), optimizers=(opt, None)
    )
    run.train()
    assert run.entropy_optimizer is opt and opt.grad_evals == STEPS_PER_EPOCH * INNER_STEPS
    assert sorted(i for m in model.seen for i in m) == list(range(N)) and len(model.seen) == opt.grad_evals


def test_an_optimizer_that_is_not_this_librarys_is_refused_clearly(tmp_path) -> None:
    model = Tiny()
    run = EntropyTrainer(model=model, args=arguments(tmp_path), train_dataset=dataset())  # the Trainer's AdamW
    with pytest.raises(TypeError, match="needs an optimizer of localentropy"):
        run.train()


def test_bf16_mixed_precision_trains(tmp_path) -> None:
    run = trainer(tmp_path, bf16=True, num_train_epochs=1)
    run.train()
    losses = [entry["loss"] for entry in run.state.log_history if "loss" in entry]
    assert len(losses) == STEPS_PER_EPOCH and all(0 < loss < 2 for loss in losses)
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # autocast: the weights stay fp32


def test_the_documented_example_runs(tmp_path, monkeypatch) -> None:
    from tests.entropy.optim.docs import doc_example

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(doc_example("### Hugging Face Trainer"), "docs/optimizers.md", "exec"), namespace)
    opt = namespace["trainer"].entropy_optimizer
    assert opt is namespace["opt"] and opt.outer_steps == 8 and opt.grad_evals == 40
    assert namespace["trainer"].state.log_history[-1]["grad_evals"] == 40
    assert (tmp_path / "entropy-bert" / "checkpoint-8" / "optimizer.pt").is_file()
