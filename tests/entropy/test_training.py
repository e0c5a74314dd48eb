"""The training-loop helpers (make_closure), dropout and batch-norm inside the inner loop, and the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from localentropy.cli import main
from localentropy.entropy import EntropySGD, make_closure
from localentropy.experiments.digits import _optimizers
from localentropy.samplers import available_samplers

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one intra-op thread


def batches(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, generator=g, dtype=F64), torch.randint(0, 2, (n,), generator=g)) for n in sizes]


class Recorder(nn.Module):
    """A linear model that remembers every input batch it sees."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2).double()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x)
        return self.linear(x)


def test_make_closure_cycles_the_loader_and_counts():
    loader = batches([4, 4, 2])
    model = Recorder()
    closure = make_closure(model, nn.functional.cross_entropy, loader)
    assert (closure.calls, closure.examples, closure.epochs_started) == (0, 0, 0)
    for _ in range(7):
        loss = closure()
        assert loss.ndim == 0 and not loss.requires_grad
    order = [0, 1, 2, 0, 1, 2, 0]
    assert len(model.seen) == 7
    for seen, index in zip(model.seen, order, strict=True):
        assert seen is loader[index][0]  # a fresh minibatch per call, in loader order, epoch after epoch
    assert closure.calls == 7
    assert closure.examples == 4 + 4 + 2 + 4 + 4 + 2 + 4
    assert closure.epochs_started == 3


def test_make_closure_with_a_dataloader_and_device():
    data = TensorDataset(torch.randn(10, 3, dtype=F64), torch.randint(0, 2, (10,)))
    loader = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    closure = make_closure(Recorder(), nn.functional.cross_entropy, loader, device="cpu")
    for _ in range(5):  # batches of 4, 4, 2, then a new shuffled epoch
        closure()
    assert closure.examples == 4 + 4 + 2 + 4 + 4
    assert closure.epochs_started == 2


def test_closure_zeroes_the_gradients_before_backward():
    loader = batches([5])
    model = Recorder()
    closure = make_closure(model, nn.functional.cross_entropy, loader)
    closure()
    once = model.linear.weight.grad.clone()
    closure()  # same batch again: the gradient is recomputed, not accumulated
    assert torch.equal(model.linear.weight.grad, once)


@pytest.mark.parametrize("loader", [[], TensorDataset(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))])
def test_empty_loader_raises_value_error(loader):
    closure = make_closure(Recorder(), nn.functional.cross_entropy, loader)
    with pytest.raises(ValueError, match="empty"):
        closure()


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2)).double()


def entropy_sgd(model, inner_steps):
    return EntropySGD(
        model.parameters(),
        lr=0.1,
        gamma=1.0,
        sampler="sgld",
        sampler_options={"step_size": 0.05, "temperature": 1e-4},
        inner_steps=inner_steps,
        generator=torch.Generator().manual_seed(0),
    )


def test_batch_norm_updates_running_stats_at_every_inner_step_in_train_mode():
    model, inner = bn_model(), 4
    bn = model[1]
    opt = entropy_sgd(model, inner)
    closure = make_closure(model, nn.functional.cross_entropy, batches([8, 8, 8]))
    model.train()
    for t in range(1, 4):
        mean_before = bn.running_mean.clone()
        opt.step(closure)
        assert int(bn.num_batches_tracked) == inner * t
        assert not torch.equal(bn.running_mean, mean_before)
    assert closure.calls == 3 * inner


def test_batch_norm_and_dropout_are_frozen_in_eval_mode():
    model = bn_model()
    bn = model[1]
    opt = entropy_sgd(model, 4)
    closure = make_closure(model, nn.functional.cross_entropy, batches([8, 8, 8]))
    model.eval()
    buffers = {k: v.clone() for k, v in bn.named_buffers()}  # running_mean, running_var, num_batches_tracked
    identity = []
    model[3].register_forward_hook(lambda module, inputs, output: identity.append(torch.equal(output, inputs[0])))
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure)
    assert int(bn.num_batches_tracked) == 0
    for key, value in bn.named_buffers():
        assert torch.equal(value, buffers[key])
    assert identity == [True] * 4  # eval-mode dropout is the identity at every inner step
    assert any(not torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before, strict=True))


def test_dropout_draws_a_new_mask_at_each_inner_step_in_train_mode():
    model, inner = bn_model(), 4
    dropped = []

    def hook(module, inputs, output):
        dropped.append((output == 0) & (inputs[0] != 0))  # units that dropout itself zeroed

    model[3].register_forward_hook(hook)
    opt = entropy_sgd(model, inner)
    closure = make_closure(model, nn.functional.cross_entropy, batches([8]))  # one batch: only the mask varies
    model.train()
    opt.step(closure)
    assert len(dropped) == inner
    assert all(int(d.sum()) > 0 for d in dropped)
    assert len({tuple(d.flatten().tolist()) for d in dropped}) == inner  # a fresh mask per closure call


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def test_cli_digits_prints_every_optimizer(capsys):
    assert main(["digits", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    names = list(_optimizers(lambda: []))
    assert len(names) >= 5
    lines = out.splitlines()
    for name in names:
        rows = [line for line in lines if line.startswith(name) and line[len(name) :].split()[0][0].isdigit()]
        assert len(rows) == 1, (name, out)
        accuracy = float(rows[0][len(name) :].split()[0])
        assert 0.0 <= accuracy <= 1.0


def test_cli_samplers_lists_every_registered_sampler(capsys):
    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")}
    assert set(available_samplers()) <= listed


def test_cli_demo_runs(capsys):
    assert main(["demo", "--steps", "300"]) == 0
    out = capsys.readouterr().out
    for name in available_samplers():
        assert any(line.startswith(name) for line in out.splitlines()), name


def test_cli_unknown_command_returns_2(capsys):
    assert main(["nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err
