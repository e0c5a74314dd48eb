"""The model registry: the paper's networks and their small versions, with input-shape checks."""

from __future__ import annotations

import pytest
import torch

from localentropy.experiments.training.models import (
    available_models,
    build_model,
    check_input_shape,
    count_parameters,
    model_options,
)

SHAPES = {
    "mlp": (1, 8, 8),
    "mnistfc": (1, 28, 28),
    "small-mnistfc": (784,),
    "lenet": (1, 28, 28),
    "small-lenet": (1, 28, 28),
    "allcnn": (3, 32, 32),
    "small-allcnn": (3, 32, 32),
    "row-lstm": (1, 28, 28),
}


def test_registry_lists_every_model():
    assert set(available_models()) == set(SHAPES) | {"char-lstm"}


def test_char_lstm_returns_logits_and_state():
    torch.manual_seed(0)
    model = build_model("char-lstm", (), 7, embedding=4, hidden=6, layers=2, dropout=0.1)
    logits, (h, c) = model(torch.randint(7, (3, 5)))
    assert logits.shape == (3, 5, 7) and h.shape == c.shape == (2, 3, 6)
    with pytest.raises(ValueError, match="token stream"):
        build_model("char-lstm", (1, 8, 8), 7)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        build_model("char-lstm", (), 7, hidden=0)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_models_give_logits_in_train_and_eval_mode(name, single_thread):
    torch.manual_seed(0)
    model = build_model(name, SHAPES[name], 10)
    x = torch.randn(3, *SHAPES[name])
    assert model(x).shape == (3, 10)
    model.eval()
    out = model(x)
    assert out.shape == (3, 10) and bool(torch.isfinite(out).all())


def test_paper_sizes_and_architecture():
    mnistfc = build_model("mnistfc", (1, 28, 28))
    assert count_parameters(mnistfc) == 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10  # 1.86 M
    dropouts = [m.p for m in mnistfc.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.15, 0.15]
    lenet = build_model("lenet", (1, 28, 28))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lenet.modules())
    assert [m.p for m in lenet.modules() if isinstance(m, torch.nn.Dropout)] == [0.25, 0.25, 0.25]
    allcnn = build_model("allcnn", (3, 32, 32))
    convs = [m for m in allcnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 96, 96, 192, 192, 192, 192, 192, 10]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in allcnn.modules()) == 9
    assert count_parameters(build_model("small-mnistfc", (784,), hidden=32)) == 784 * 32 + 32 + 32 * 32 + 32 + 330


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("lenet", (1, 8, 8), r"needs inputs of shape \(1, 28, 28\)"),
        ("allcnn", (1, 28, 28), r"needs inputs of shape \(3, 32, 32\)"),
        ("mnistfc", (40,), "needs inputs of 784 values"),
    ],
)
def test_input_shape_checks(name, shape, message):
    assert check_input_shape(name, shape) is not None
    with pytest.raises(ValueError, match=message):
        build_model(name, shape)


def test_bad_options_and_names():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet", (3, 32, 32))
    with pytest.raises(ValueError, match=r"unknown option.*width"):
        build_model("mlp", (64,), width=3)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        build_model("mnistfc", (784,), dropout=1.5)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        build_model("mlp", (64,), hidden=[0])
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", (64,), 1)
    assert model_options("mlp") == {"hidden": (64,), "dropout": 0.0, "batch_norm": False, "input_dropout": 0.0}


def test_mlp_options_batch_norm_and_depth():
    model = build_model("mlp", (40,), hidden=[16, 8], batch_norm=True, dropout=0.1)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 16), (16, 8), (8, 10)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == 2
