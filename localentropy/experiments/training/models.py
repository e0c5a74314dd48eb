"""Models of the Entropy-SGD paper and small versions for fast tests, built by name with input-shape checks.

``build_model(name, input_shape, num_classes=10, **options)``; every model returns logits. The paper's
networks (Chaudhari et al. 2017, section 5):

* ``mnistfc``: 784-1024-1024-10, ReLU, dropout 0.15 after each hidden layer (the paper; the authors' Lua code
  used 0.5, their PyTorch port adds batch norm and 0.2 input dropout: ``batch_norm=True, input_dropout=0.2``);
* ``lenet``: LeNet with batch norm, conv 20 (5x5) - max-pool 3 - conv 50 (5x5) - max-pool 2 - fc 500 - 10,
  dropout 0.25, on (1, 28, 28) inputs;
* ``allcnn``: All-CNN-C with batch norm after every convolution (96 and 192 channels, dropout 0.2 on the input
  and 0.5 after each stride-2 block, global average pooling), on (3, 32, 32) inputs.

Small versions: ``small-mnistfc`` (784-128-128-10), ``small-lenet`` (4 and 8 channels, fc 32),
``small-allcnn`` (8 and 16 channels), and ``mlp`` (any input, flattened; ``hidden`` a list of widths).

Recurrent (:mod:`localentropy.experiments.training.recurrent`): ``char-lstm``, a language model on a token stream
(input shape (); ``num_classes`` is the vocabulary size; it returns (logits, state), see ``TEXT_MODELS``), and
``row-lstm``, which reads an image (1, H, W) one row per time step.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from localentropy.experiments.training.recurrent import CharLSTM, RowLSTM

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, tuple[ModelFactory, Callable[[tuple[int, ...]], str | None]]] = {}


def _flat_dims(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def _needs_numel(n: int) -> Callable[[tuple[int, ...]], str | None]:
    return lambda shape: None if _flat_dims(shape) == n else f"inputs of {n} values (e.g. (1, 28, 28) or ({n},))"


def _needs_shape(expected: tuple[int, ...]) -> Callable[[tuple[int, ...]], str | None]:
    return lambda shape: None if tuple(shape) == expected else f"inputs of shape {expected}"


def register_model(name: str, check: Callable[[tuple[int, ...]], str | None]) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(input_shape, num_classes, **options)`` under ``name``; ``check`` describes valid shapes."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[name] = (factory, check)
        return factory

    return decorate


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def model_options(name: str) -> dict[str, Any]:
    """A model's options with their defaults."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(available_models())}")
    params = inspect.signature(_REGISTRY[name][0]).parameters
    return {k: p.default for k, p in params.items() if k not in ("input_shape", "num_classes")}


def check_input_shape(name: str, input_shape: Sequence[int]) -> str | None:
    """None when model ``name`` accepts inputs of ``input_shape`` (one example), else what it needs."""
    model_options(name)
    return _REGISTRY[name][1](tuple(int(s) for s in input_shape))


def build_model(name: str, input_shape: Sequence[int], num_classes: int = 10, **options: Any) -> nn.Module:
    """Build model ``name`` for inputs of ``input_shape`` (one example, no batch dimension)."""
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; options: {', '.join(accepted)}")
    problem = check_input_shape(name, input_shape)
    if problem is not None:
        raise ValueError(f"model {name!r} needs {problem}, got inputs of shape {tuple(input_shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return _REGISTRY[name][0](tuple(int(s) for s in input_shape), num_classes, **options)


def _dropout(p: float, name: str = "dropout") -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {p!r}")
    return float(p)


def _widths(hidden: Any) -> list[int]:
    widths = [hidden] if isinstance(hidden, int) and not isinstance(hidden, bool) else hidden
    if not isinstance(widths, (list, tuple)) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in widths
    ):
        raise ValueError(f"hidden must be a positive integer or a list of them, got {hidden!r}")
    return list(widths)


def _mlp(
    n_in: int, hidden: Sequence[int], num_classes: int, dropout: float, batch_norm: bool, input_dropout: float
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    if input_dropout:
        layers.append(nn.Dropout(_dropout(input_dropout, "input_dropout")))
    width = n_in
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(_dropout(dropout)))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("mlp", lambda shape: None)
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Any = (64,),
    dropout: float = 0.0,
    batch_norm: bool = False,
    input_dropout: float = 0.0,
) -> nn.Module:
    """A multilayer perceptron on the flattened input."""
    return _mlp(_flat_dims(input_shape), _widths(hidden), num_classes, dropout, bool(batch_norm), input_dropout)


@register_model("mnistfc", _needs_numel(784))
def mnistfc(
    input_shape: tuple[int, ...],
    num_classes: int,
    dropout: float = 0.15,
    batch_norm: bool = False,
    input_dropout: float = 0.0,
) -> nn.Module:
    """The paper's mnistfc: 784-1024-1024-10 with dropout (1.86 M parameters)."""
    return _mlp(784, [1024, 1024], num_classes, dropout, bool(batch_norm), input_dropout)


@register_model("small-mnistfc", _needs_numel(784))
def small_mnistfc(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int = 128,
    dropout: float = 0.15,
    batch_norm: bool = False,
    input_dropout: float = 0.0,
) -> nn.Module:
    """mnistfc narrowed to ``hidden`` units per layer (784-128-128-10 by default)."""
    return _mlp(784, _widths([hidden, hidden]), num_classes, dropout, bool(batch_norm), input_dropout)


def _conv_bn(c_in: int, c_out: int, kernel: int, pool: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(pool, stride=pool),
    ]
    if dropout:
        layers.append(nn.Dropout(_dropout(dropout)))
    return nn.Sequential(*layers)


def _lenet(c1: int, c2: int, fc: int, num_classes: int, dropout: float) -> nn.Module:
    # 28 -> conv 5 -> 24 -> pool 3 -> 8 -> conv 5 -> 4 -> pool 2 -> 2
    layers: list[nn.Module] = [
        _conv_bn(1, c1, 5, 3, dropout),
        _conv_bn(c1, c2, 5, 2, dropout),
        nn.Flatten(),
        nn.Linear(c2 * 2 * 2, fc),
        nn.BatchNorm1d(fc),
        nn.ReLU(),
    ]
    if dropout:
        layers.append(nn.Dropout(_dropout(dropout)))
    layers.append(nn.Linear(fc, num_classes))
    return nn.Sequential(*layers)


@register_model("lenet", _needs_shape((1, 28, 28)))
def lenet(input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.25) -> nn.Module:
    """LeNet with batch norm (the paper's LeNet-BN): conv 20 - conv 50 - fc 500."""
    return _lenet(20, 50, 500, num_classes, dropout)


@register_model("small-lenet", _needs_shape((1, 28, 28)))
def small_lenet(input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.25) -> nn.Module:
    """LeNet-BN with 4 and 8 channels and 32 hidden units."""
    return _lenet(4, 8, 32, num_classes, dropout)


def _allcnn(c1: int, c2: int, num_classes: int, dropout: float, input_dropout: float) -> nn.Module:
    def conv(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding), nn.BatchNorm2d(c_out), nn.ReLU()
        )

    layers: list[nn.Module] = []
    if input_dropout:
        layers.append(nn.Dropout(_dropout(input_dropout, "input_dropout")))
    layers += [conv(3, c1, 3), conv(c1, c1, 3), conv(c1, c1, 3, stride=2)]
    if dropout:
        layers.append(nn.Dropout(_dropout(dropout)))
    layers += [conv(c1, c2, 3), conv(c2, c2, 3), conv(c2, c2, 3, stride=2)]
    if dropout:
        layers.append(nn.Dropout(_dropout(dropout)))
    # as the authors' code: two more 3x3 convolutions, then a 1x1 one to the classes (with batch norm and ReLU)
    layers += [conv(c2, c2, 3), conv(c2, c2, 3), conv(c2, num_classes, 1, padding=0)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]  # 8 x 8 average pooling for 32 x 32 inputs
    return nn.Sequential(*layers)


@register_model("allcnn", _needs_shape((3, 32, 32)))
def allcnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    dropout: float = 0.5,
    input_dropout: float = 0.2,
    channels: Any = (96, 192),
) -> nn.Module:
    """All-CNN-C with batch norm (the paper's All-CNN-BN for CIFAR-10)."""
    c1, c2 = _widths(channels) if len(_widths(channels)) == 2 else (0, 0)
    if not c1:
        raise ValueError(f"channels must be two positive integers, got {channels!r}")
    return _allcnn(c1, c2, num_classes, dropout, input_dropout)


@register_model("small-allcnn", _needs_shape((3, 32, 32)))
def small_allcnn(
    input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.5, input_dropout: float = 0.2
) -> nn.Module:
    """All-CNN-C with batch norm and 8 / 16 channels."""
    return _allcnn(8, 16, num_classes, dropout, input_dropout)


TEXT_MODELS = ("char-lstm",)  # the models of token streams: forward(tokens, state) -> (logits, state)


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@register_model(
    "char-lstm", lambda shape: None if tuple(shape) == () else "a token stream (data.source = 'text' or 'markov-text')"
)
def char_lstm(
    input_shape: tuple[int, ...],
    num_classes: int,
    embedding: int = 32,
    hidden: int = 128,
    layers: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    """A character (or word) LSTM language model; ``num_classes`` is the vocabulary size."""
    return CharLSTM(
        num_classes,
        _positive(embedding, "embedding"),
        _positive(hidden, "hidden"),
        _positive(layers, "layers"),
        _dropout(dropout),
    )


@register_model(
    "row-lstm",
    lambda shape: (
        None if len(shape) == 3 and shape[0] == 1 else "one-channel images (1, H, W), read one row per time step"
    ),
)
def row_lstm(
    input_shape: tuple[int, ...], num_classes: int, hidden: int = 64, layers: int = 1, dropout: float = 0.0
) -> nn.Module:
    """An LSTM reading an image one row per time step (28 steps of 28 on MNIST, 8 of 8 on digits)."""
    return RowLSTM(
        input_shape[1],
        input_shape[2],
        num_classes,
        _positive(hidden, "hidden"),
        _positive(layers, "layers"),
        _dropout(dropout),
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
