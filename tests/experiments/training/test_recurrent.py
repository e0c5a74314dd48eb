"""Recurrent models: truncated BPTT and hidden-state carrying (under SGD and across Entropy-SGD's inner and outer
steps), clipping inside the closure, a char-LSTM approaching but never beating a Markov source's entropy rate,
``localentropy train`` on markov-text, a user's text file and digits (row-LSTM), and bad configs."""

from __future__ import annotations

import copy
import itertools
import json
import math

import pytest
import torch
from torch import nn

from localentropy.cli import main
from localentropy.data import load_data
from localentropy.data.text import MarkovSource, TokenStream
from localentropy.entropy.optim import EntropySGD
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.training.config import parse_train_config
from localentropy.experiments.training.models import build_model
from localentropy.experiments.training.text import TextStream, evaluate_text, text_final
from localentropy.experiments.training.trainer import run_training
from tests.experiments.training.helpers import toml_text as _toml


def _model(vocab: int = 5, hidden: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return build_model("char-lstm", (), vocab, embedding=4, hidden=hidden, layers=2)


def _tokens(n: int = 400, vocab: int = 5) -> TokenStream:
    return TokenStream(torch.randint(vocab, (n,), generator=torch.Generator().manual_seed(1)))


def test_state_is_carried_between_segments_and_truncated(single_thread) -> None:
    model, data = _model(), _tokens()
    stream = TextStream(model, data, batch_size=3, bptt=7, seed=0)
    stream()
    first = stream._segment
    stream()
    x1, y1, s1 = first
    x2, y2, s2 = stream._segment
    assert s1 is None and s2 is not None and not s2[0].requires_grad  # detached: truncation
    # the state carried into segment 2 is the state after segment 1 (the weights have not moved)
    with torch.no_grad():
        _, after_first = model(x1)
        _, after_both = model(torch.cat([x1, x2], dim=1))
    torch.testing.assert_close(s2[0], after_first[0])
    torch.testing.assert_close(stream.hidden[0], after_both[0], atol=1e-6, rtol=1e-5)
    # the consecutive segments of a row are contiguous text
    assert x2[0, 0] == y1[0, -1]
    # the gradient of call 2 flows through segment 2 only: equal to the loss of segment 2 from the detached state,
    # different from full backpropagation through both segments
    grad = [p.grad.clone() for p in model.parameters()]

    def seg_grad(inputs: torch.Tensor, targets: torch.Tensor, state) -> list[torch.Tensor]:
        model.zero_grad()
        logits, _ = model(inputs, state)
        nn.functional.cross_entropy(logits.reshape(-1, 5), targets.reshape(-1)).backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(grad, seg_grad(x2, y2, s2), strict=True):
        torch.testing.assert_close(a, b)
    model.zero_grad()
    logits, _ = model(torch.cat([x1, x2], 1))
    nn.functional.cross_entropy(logits[:, 7:].reshape(-1, 5), y2.reshape(-1)).backward()
    assert any(not torch.allclose(a, p.grad) for a, p in zip(grad, model.parameters(), strict=True))


def test_state_is_carried_across_entropy_sgd_inner_and_outer_steps(single_thread) -> None:
    model, data = _model(), _tokens(2000)
    seen: list[tuple] = []
    forward = model.forward

    def recording(tokens, state=None):
        logits, new = forward(tokens, state)
        seen.append((state, new))
        return logits, new

    model.forward = recording  # type: ignore[method-assign]
    stream = TextStream(model, data, batch_size=2, bptt=5, seed=0)
    optimizer = EntropySGD(
        model.parameters(), lr=0.1, gamma=0.1, inner_steps=3, sampler_options={"step_size": 0.05, "temperature": 1e-8}
    )
    for _ in range(2):
        optimizer.step(stream)
    assert len(seen) == 6 and stream.calls == 6 and stream.position == 6
    assert seen[0][0] is None
    for (_, previous_out), (state_in, _) in itertools.pairwise(seen):
        # each inner step starts from the state the previous one (at its own x') left, across outer steps too
        torch.testing.assert_close(state_in[0], previous_out[0].detach())
        torch.testing.assert_close(state_in[1], previous_out[1].detach())


def test_a_new_pass_starts_from_a_zero_state_and_a_seeded_offset(single_thread) -> None:
    model, data = _model(), _tokens(200)
    stream = TextStream(model, data, batch_size=2, bptt=10, seed=3)
    for _ in range(stream.batches_per_pass):
        stream()
    assert stream.hidden is not None
    stream()
    assert stream._segment[2] is None and stream.data_epoch == 1
    again = TextStream(model, data, batch_size=2, bptt=10, seed=3)
    again.load_state_dict(stream.state_dict())
    assert again.data_epoch == 1 and again.hidden is not None
    torch.testing.assert_close(again._pass_rows()[0], stream._pass_rows()[0])


def test_clipping_acts_inside_the_closure(single_thread) -> None:
    model, data = _model(), _tokens()
    stream = TextStream(model, data, batch_size=3, bptt=7, seed=0, clip_grad_norm=1e-3)
    for _ in range(3):
        stream()
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        assert float(norm) <= 1e-3 * (1 + 1e-5)


def test_evaluation_reads_whole_rows_with_the_state_carried(single_thread) -> None:
    model, data = _model(), _tokens(1700)
    loss, error = evaluate_text(model, data)
    rows, length = 16, 1699 // 16
    with torch.no_grad():
        logits, _ = model(data.tokens[: rows * length].view(rows, length))
        want = nn.functional.cross_entropy(logits.reshape(-1, 5), data.tokens[1 : rows * length + 1])
    assert loss == pytest.approx(float(want), rel=1e-5) and 0 <= error <= 1


TEXT_CONFIG = {
    "name": "lm",
    "seed": 0,
    "batch_size": 16,
    "bptt": 16,
    "clip_grad_norm": 5.0,
    "effective_epochs": 6,
    "epoch_unit": "effective",
    "data": {
        "source": "markov-text",
        "options": {"order": 1, "alphabet": 4, "concentration": 0.2, "length": 24000, "chain_seed": 1},
    },
    "model": {"name": "char-lstm", "options": {"embedding": 8, "hidden": 16, "layers": 1}},
    "optimizers": [{"kind": "adam", "lr": 0.02, "options": {"betas": [0.5, 0.999]}}],
}


def test_char_lstm_approaches_the_entropy_rate_and_never_beats_it(tmp_path, single_thread) -> None:
    out, _ = run_training(parse_train_config(copy.deepcopy(TEXT_CONFIG)), tmp_path / "lm")
    results = json.loads((out / "results.json").read_text())
    record = results["records"][0]
    floor = results["data"]["entropy_rate_bits"]
    chain = MarkovSource(1, 4, 0.2, 1)
    assert floor == pytest.approx(chain.entropy_rate) == record["final"]["entropy_rate"]
    # the noise of a held-out estimate: the true chain's per-token log loss on the test block
    test = load_data("markov-text", options=TEXT_CONFIG["data"]["options"]).test.tokens.numpy()
    losses = -torch.log2(torch.from_numpy(chain.transitions[test[:-1], test[1:]]))
    se = float(losses.std()) / math.sqrt(len(losses))
    bpc = [row["test_bits_per_char"] for row in record["rows"]]
    assert bpc[0] > floor + 0.3  # untrained: far above
    assert all(b > floor - 4 * se for b in bpc)  # never below the floor beyond the noise
    assert record["final"]["bits_per_char"] < floor + 0.05  # approaches it
    assert record["final"]["perplexity"] == pytest.approx(2 ** record["final"]["bits_per_char"])
    assert len(record["rows"]) == 7  # evaluated after each pass over the data


def test_train_cli_on_markov_text_a_text_file_and_digits(tmp_path, capsys, single_thread) -> None:
    entropy_adam = {
        "kind": "entropy-adam",
        "lr": 0.01,
        "options": {"gamma": 0.01, "inner_steps": 2, "betas": [0.5, 0.999]},
        "sampler": "sgld",
        "sampler_options": {"step_size": 0.1},
    }
    adam = {"kind": "adam", "lr": 0.01}
    text = tmp_path / "book.txt"
    text.write_text("It was the best of times, it was the worst of times.\n" * 60, encoding="utf-8")
    configs = {
        "markov": {**TEXT_CONFIG, "effective_epochs": 1, "optimizers": [adam, entropy_adam]},
        "book": {
            **TEXT_CONFIG,
            "effective_epochs": 1,
            "data": {"source": "text", "path": str(text)},
            "optimizers": [adam, entropy_adam],
        },
        "rows": {
            "name": "rows",
            "effective_epochs": 1,
            "clip_grad_norm": 5.0,
            "data": {"source": "digits"},
            "model": {"name": "row-lstm", "options": {"hidden": 16}},
            "flatness": {"measures": []},
            "optimizers": [adam, entropy_adam],
        },
    }
    for name, cfg in configs.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(_toml(cfg))
        assert main(["train", str(path), "--out", str(tmp_path / name)]) == 0, capsys.readouterr().err
        results = json.loads((tmp_path / name / "results.json").read_text())
        finals = [r["final"] for r in results["records"]]
        assert all(r["status"] == "ok" for r in results["records"])
        if name == "rows":
            assert "bits_per_char" not in finals[0] and results["model"]["parameters"] > 0
        else:
            assert all(f["bits_per_char"] > 0 for f in finals)
            assert all((f["entropy_rate"] is None) == (name == "book") for f in finals)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bptt": 8, "data": {"source": "digits"}, "model": {"name": "mlp"}}, "bptt: got 8"),
        ({"model": {"name": "mlp"}}, "model.name"),
        ({"data": {"source": "digits"}}, "model.name"),
        ({"flatness": {"measures": ["trace"]}}, "flatness.measures"),
        ({"data": {"source": "markov-text", "options": {"order": "two"}}}, "data.options.order"),
        ({"data": {"source": "digits", "options": {"order": 2}}}, "data.options"),
        ({"clip_grad_norm": -1}, "clip_grad_norm"),
        ({"epoch_unit": "pass"}, "epoch_unit"),
    ],
)
def test_bad_recurrent_configs_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_train_config({**copy.deepcopy(TEXT_CONFIG), **change})


def test_a_loss_beyond_the_float_range_records_no_perplexity() -> None:
    """A tuning trial at a wild rate can end with a finite loss whose exponential overflows: the perplexity is then
    null (results files hold no infinity), and the bits stay recorded."""
    final = text_final({"test_loss": 800.0, "val_loss": 790.0}, {"entropy_rate_bits": 2.3})
    assert final["perplexity"] is None and final["bits_per_char"] == pytest.approx(800.0 / math.log(2.0))
    assert text_final({"test_loss": 1.0}, {})["perplexity"] == pytest.approx(math.e)
