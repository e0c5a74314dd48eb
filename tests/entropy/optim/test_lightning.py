"""EntropySGD under PyTorch Lightning: the manual-optimisation recipe of docs/optimizers.md, and what the
automatic loop does.

The recipe: ``automatic_optimization = False``, a loader batch of ``inner_steps`` x minibatch size, and
``opt.step(closure=SplitBatchClosure(batch, inner_steps, batch_loss, backward=self.manual_backward))``: every
inner step gets its own minibatch. Under automatic optimisation every closure call re-runs ``training_step``
on the same batch (the optimizer warns), and with ``accumulate_grad_batches`` the library zeroes the
gradients before each call (before the fix they summed across inner calls).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from localentropy.entropy import EntropySGD, SplitBatchClosure

pl = pytest.importorskip("pytorch_lightning")

INNER_STEPS, MINIBATCH, N = 3, 4, 48
TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "enable_progress_bar": False,
    "logger": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
}


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|LitLogger).*")
        yield


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(N, 4, generator=g), torch.randint(0, 2, (N,), generator=g), torch.arange(N))


def optimizer(params) -> EntropySGD:
    return EntropySGD(
        params,
        lr=0.1,
        gamma=1.0,
        inner_steps=INNER_STEPS,
        momentum=0.9,
        sampler="sgld",
        sampler_options={"step_size": 0.05, "temperature": 1e-4},
    )


class Recipe(pl.LightningModule):
    """The documented recipe: manual optimisation, one fresh minibatch per inner step."""

    def __init__(self, total_steps: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.automatic_optimization = False
        self.total_steps = total_steps
        self.seen: list[list[int]] = []  # the example indices of each inner step

    def batch_loss(self, minibatch) -> torch.Tensor:
        inputs, targets, index = minibatch
        self.seen.append(index.tolist())
        return nn.functional.cross_entropy(self.net(inputs), targets)

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        closure = SplitBatchClosure(batch, INNER_STEPS, self.batch_loss, backward=self.manual_backward)
        loss = opt.step(closure=closure)
        self.lr_schedulers().step()
        self.log("train_loss", loss)

    def configure_optimizers(self):
        opt = optimizer(self.parameters())
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=self.total_steps)
        return {"optimizer": opt, "lr_scheduler": sched}


def loader() -> DataLoader:
    return DataLoader(dataset(), batch_size=INNER_STEPS * MINIBATCH, shuffle=False, drop_last=True)


def test_the_manual_recipe_gives_every_inner_step_a_fresh_minibatch(tmp_path) -> None:
    steps_per_epoch = N // (INNER_STEPS * MINIBATCH)
    module = Recipe(total_steps=2 * steps_per_epoch)
    pl.Trainer(max_epochs=2, default_root_dir=tmp_path, **TRAINER).fit(module, loader())
    opt = module.optimizers().optimizer
    assert opt.outer_steps == 2 * steps_per_epoch and opt.grad_evals == 2 * steps_per_epoch * INNER_STEPS
    for step in range(opt.outer_steps):
        inner = module.seen[step * INNER_STEPS : (step + 1) * INNER_STEPS]
        assert len({tuple(m) for m in inner}) == INNER_STEPS  # distinct minibatches within one outer step
        assert all(len(m) == MINIBATCH for m in inner)
    epoch = sorted(i for m in module.seen[: steps_per_epoch * INNER_STEPS] for i in m)
    assert epoch == list(range(N))  # one epoch reads every example once


def test_the_manual_recipe_resumes_from_a_checkpoint_bit_identically(tmp_path) -> None:
    steps_per_epoch = N // (INNER_STEPS * MINIBATCH)
    total = 4 * steps_per_epoch
    straight = Recipe(total_steps=total)
    pl.Trainer(max_epochs=4, default_root_dir=tmp_path / "a", **TRAINER).fit(straight, loader())

    first = Recipe(total_steps=total)
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path / "b", **TRAINER)
    trainer.fit(first, loader())
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = Recipe(total_steps=total)
    resumed.net[0].weight.data.add_(1.0)  # whatever the fresh module holds is overwritten by the checkpoint
    torch.manual_seed(123)  # and the optimizer's own seed too: the generator state is in the checkpoint
    pl.Trainer(max_epochs=4, default_root_dir=tmp_path / "c", **TRAINER).fit(
        resumed, loader(), ckpt_path=tmp_path / "half.ckpt"
    )
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert resumed.optimizers().optimizer.outer_steps == total


def test_manual_optimisation_refuses_accumulate_grad_batches(tmp_path) -> None:
    """Lightning itself refuses the combination, so the recipe cannot be run with it by mistake."""
    module = Recipe(total_steps=10)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, accumulate_grad_batches=2, **TRAINER)
    with pytest.raises(Exception, match="accumulate_grad_batches"):
        trainer.fit(module, loader())


class Clipped(Recipe):
    """The recipe with the documented clipping: ``self.clip_gradients`` in ``on_before_optimizer_step``."""

    def __init__(self, total_steps: int, clip_norm: float) -> None:
        super().__init__(total_steps)
        self.clip_norm = clip_norm
        self.norms: list[float] = []  # the gradient norm the optimizer gets, after every closure call

    def on_before_optimizer_step(self, optimizer) -> None:
        self.clip_gradients(optimizer, gradient_clip_val=self.clip_norm, gradient_clip_algorithm="norm")
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)))


def test_clipping_in_on_before_optimizer_step_clips_every_inner_gradient(tmp_path) -> None:
    steps = N // (INNER_STEPS * MINIBATCH)
    clipped, free = Clipped(total_steps=steps, clip_norm=0.05), Clipped(total_steps=steps, clip_norm=1e9)
    for module in (clipped, free):
        pl.Trainer(max_epochs=1, default_root_dir=tmp_path, **TRAINER).fit(module, loader())
    # the hook runs inside Lightning's wrapper of the closure: once per inner call, before the optimizer reads
    assert len(clipped.norms) == len(free.norms) == steps * INNER_STEPS
    assert max(clipped.norms) <= 0.05 * (1 + 1e-5) < min(free.norms)
    assert any(not torch.equal(p, q) for p, q in zip(clipped.parameters(), free.parameters(), strict=True))


def test_manual_optimisation_refuses_gradient_clip_val(tmp_path) -> None:
    """Why the docs clip in on_before_optimizer_step: Trainer(gradient_clip_val=...) is refused here."""
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, gradient_clip_val=1.0, **TRAINER)
    with pytest.raises(Exception, match="Automatic gradient clipping is not supported for manual optimization"):
        trainer.fit(Recipe(total_steps=10), loader())


class Automatic(pl.LightningModule):
    """Lightning's automatic optimisation, as people write it first."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.grads_at_entry: list[tuple[int, bool]] = []  # (batch_idx, all gradients zero or None)

    def training_step(self, batch, batch_idx):
        clean = all(p.grad is None or not p.grad.any() for p in self.parameters())
        self.grads_at_entry.append((batch_idx, clean))
        inputs, targets, _ = batch
        return nn.functional.cross_entropy(self.net(inputs), targets)

    def configure_optimizers(self):
        opt = optimizer(self.parameters())
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=20)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_automatic_optimisation_warns_and_zeroes_gradients_under_accumulation(tmp_path) -> None:
    module = Automatic()
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, accumulate_grad_batches=2, **TRAINER)
    data = DataLoader(dataset(), batch_size=MINIBATCH, shuffle=False)
    with pytest.warns(UserWarning, match="re-runs training_step on the same batch"):
        trainer.fit(module, data)
    opt = module.optimizers().optimizer
    assert opt.outer_steps == N // MINIBATCH // 2  # one step per accumulation window (OneCycleLR accepted)
    # the calls inside opt.step (odd batch_idx: the last of each window) all start from zeroed gradients
    inner = [clean for batch_idx, clean in module.grads_at_entry if batch_idx % 2 == 1]
    assert len(inner) == opt.outer_steps * INNER_STEPS and all(inner)


def test_the_documented_example_runs(tmp_path, monkeypatch) -> None:
    from tests.entropy.optim.docs import doc_example

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(doc_example("### PyTorch Lightning"), "docs/optimizers.md", "exec"), namespace)
    opt = namespace["trainer"].optimizers[0]
    assert opt.outer_steps == 2 * len(namespace["loader"]) and opt.grad_evals == opt.outer_steps * 5
    assert torch.isfinite(namespace["trainer"].callback_metrics["train_loss"])  # the loss opt.step returned
