"""Errors of the sampler layer: every bad hyperparameter or call is refused with a message naming the field."""

from __future__ import annotations

import inspect
import math
from typing import NamedTuple

import pytest
import torch

from localentropy.samplers import (
    PSGLD,
    SGHMC,
    SGLD,
    Sampler,
    available_samplers,
    make_sampler,
    register_sampler,
    sample,
    sampler_class,
    sampler_hyperparameters,
)
from localentropy.samplers import registry as registry_module

BUILT_IN = ("sgld", "sghmc", "psgld")


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it (the registry is module-global)."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


class GradientDescent(Sampler):
    """A tiny user-defined sampler: gradient descent with a step size (T and noise kept for the contract)."""

    name = "user-gd"

    class State(NamedTuple):
        position: torch.Tensor
        step: int

    def __init__(self, step_size: float, temperature: float = 0.0, noise: str = "gaussian") -> None:
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        self.step_size = step_size
        self._check_common(temperature, noise)

    def init(self, position):
        return self.State(position=position, step=0)

    def step(self, state, grad, generator=None, *, noise=None):
        state.position.add_(grad, alpha=-self.step_size)
        return state._replace(step=state.step + 1)


# ----------------------------------------------------------------------------------------------------------
# make_sampler
# ----------------------------------------------------------------------------------------------------------


def test_unknown_sampler_name_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'sgdl'") as info:
        make_sampler("sgdl", step_size=0.1)
    for name in available_samplers():
        assert name in str(info.value)


@pytest.mark.parametrize("name", BUILT_IN)
def test_unknown_hyperparameter_lists_the_valid_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown hyperparameter.*lr") as info:
        make_sampler(name, step_size=0.1, lr=0.1)
    for parameter in sampler_hyperparameters(name):
        assert parameter in str(info.value)


@pytest.mark.parametrize("name", BUILT_IN)
def test_missing_step_size(name: str) -> None:
    with pytest.raises(ValueError, match=r"missing required hyperparameter.*step_size"):
        make_sampler(name)
    with pytest.raises(ValueError, match=r"missing required hyperparameter.*step_size"):
        make_sampler(name, temperature=1.0)


def test_make_sampler_builds_the_registered_classes() -> None:
    assert type(make_sampler("sgld", step_size=0.1)) is SGLD
    assert type(make_sampler("sghmc", step_size=0.1)) is SGHMC
    assert type(make_sampler("psgld", step_size=0.1)) is PSGLD
    assert sampler_class("psgld") is PSGLD
    assert sampler_hyperparameters("sgld") == {
        "step_size": inspect.Parameter.empty,  # required
        "temperature": 1.0,
        "noise": "gaussian",
    }


# ----------------------------------------------------------------------------------------------------------
# Hyperparameter validation
# ----------------------------------------------------------------------------------------------------------

BAD_REALS = [0.0, -0.1, math.nan, math.inf, -math.inf, True, "0.1", None]


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("value", BAD_REALS, ids=repr)
def test_bad_step_size(name: str, value) -> None:
    with pytest.raises(ValueError, match="step_size"):
        make_sampler(name, step_size=value)


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("value", [-1e-9, -1.0, math.nan, math.inf, False, "1"], ids=repr)
def test_bad_temperature(name: str, value) -> None:
    with pytest.raises(ValueError, match="temperature"):
        make_sampler(name, step_size=0.1, temperature=value)


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("value", ["normal", "Gaussian", "", None, 1])
def test_bad_noise_kind(name: str, value) -> None:
    with pytest.raises(ValueError, match="noise") as info:
        make_sampler(name, step_size=0.1, noise=value)
    assert "gaussian" in str(info.value) and "rademacher" in str(info.value)


@pytest.mark.parametrize("value", [0.0, -0.1, 1.0001, 2.0, math.nan, True])
def test_bad_friction(value) -> None:
    with pytest.raises(ValueError, match="friction"):
        SGHMC(step_size=0.1, friction=value)


def test_friction_edges() -> None:
    assert SGHMC(step_size=0.1, friction=1.0).friction == 1.0
    assert SGHMC(step_size=0.1, friction=1e-9).friction == 1e-9


@pytest.mark.parametrize(("friction", "noise_estimate"), [(0.1, 0.2), (0.1, 0.1000001), (0.5, -0.01), (0.5, math.nan)])
def test_bad_noise_estimate(friction: float, noise_estimate: float) -> None:
    with pytest.raises(ValueError, match="noise_estimate"):
        SGHMC(step_size=0.1, friction=friction, noise_estimate=noise_estimate)


def test_noise_estimate_edges() -> None:
    assert SGHMC(step_size=0.1, friction=0.3, noise_estimate=0.3).noise_estimate == 0.3
    assert SGHMC(step_size=0.1, friction=0.3, noise_estimate=0.0).noise_estimate == 0.0


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, math.nan, True])
def test_bad_beta(value) -> None:
    with pytest.raises(ValueError, match="beta"):
        PSGLD(step_size=0.1, beta=value)


def test_beta_edges() -> None:
    assert PSGLD(step_size=0.1, beta=0.0).beta == 0.0
    assert PSGLD(step_size=0.1, beta=0.999999).beta == 0.999999


@pytest.mark.parametrize("value", [0.0, -1e-5, math.inf, "1e-5"])
def test_bad_damping(value) -> None:
    with pytest.raises(ValueError, match="damping"):
        PSGLD(step_size=0.1, damping=value)


@pytest.mark.parametrize("value", ["Outside", "both", "", None])
def test_bad_damping_placement(value) -> None:
    with pytest.raises(ValueError, match="damping_placement") as info:
        PSGLD(step_size=0.1, damping_placement=value)
    assert "outside" in str(info.value) and "inside" in str(info.value)


def test_replace_validates_again() -> None:
    sampler = SGHMC(step_size=0.1, friction=0.2)
    with pytest.raises(ValueError, match="friction"):
        sampler.replace(friction=0.0)
    with pytest.raises(ValueError, match="noise_estimate"):
        sampler.replace(noise_estimate=0.5)
    assert sampler.friction == 0.2 and sampler.noise_estimate == 0.0


# ----------------------------------------------------------------------------------------------------------
# register_sampler / available_samplers
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_registry")
def test_user_sampler_is_registered_and_made_by_name() -> None:
    register_sampler("user-gd", GradientDescent)
    assert "user-gd" in available_samplers()
    sampler = make_sampler("user-gd", step_size=0.5)
    assert isinstance(sampler, GradientDescent)
    assert sampler.hyperparameters == {"step_size": 0.5, "temperature": 0.0, "noise": "gaussian"}
    draws = sample(sampler, lambda x: x, torch.ones(2, 3), 2)
    torch.testing.assert_close(draws[:, -1], torch.full((2, 3), 0.25))
    with pytest.raises(ValueError, match=r"unknown hyperparameter.*friction"):
        make_sampler("user-gd", step_size=0.5, friction=0.1)
    # registering the same class again under its name is harmless
    register_sampler("user-gd", GradientDescent)


def test_user_registration_does_not_leak() -> None:
    assert "user-gd" not in available_samplers()


@pytest.mark.usefixtures("clean_registry")
def test_duplicate_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_sampler("sgld", GradientDescent)
    assert sampler_class("sgld") is SGLD
    register_sampler("sgld", GradientDescent, overwrite=True)
    assert sampler_class("sgld") is GradientDescent


@pytest.mark.usefixtures("clean_registry")
@pytest.mark.parametrize("cls", [object, int, "SGLD", SGLD(step_size=0.1), None])
def test_non_sampler_class_is_refused(cls) -> None:
    with pytest.raises(TypeError, match=r"subclass of localentropy\.samplers\.Sampler"):
        register_sampler("not-a-sampler", cls)
    assert "not-a-sampler" not in available_samplers()


@pytest.mark.usefixtures("clean_registry")
@pytest.mark.parametrize("name", ["", "User", "my sampler", "gd!", "a.b", None, 3])
def test_bad_name_is_refused(name) -> None:
    with pytest.raises(ValueError, match="sampler name"):
        register_sampler(name, GradientDescent)


@pytest.mark.usefixtures("clean_registry")
def test_available_samplers_are_sorted() -> None:
    names = available_samplers()
    assert names == sorted(names)
    assert set(BUILT_IN) <= set(names)
    register_sampler("aaa-first", GradientDescent)
    register_sampler("zzz_last", GradientDescent)
    names = available_samplers()
    assert names == sorted(names) and names[0] == "aaa-first" and names[-1] == "zzz_last"


# ----------------------------------------------------------------------------------------------------------
# sample()
# ----------------------------------------------------------------------------------------------------------


def _grad(x: torch.Tensor) -> torch.Tensor:
    return x


@pytest.mark.parametrize(("n_steps", "burn_in"), [(10, 10), (10, 11), (1, 1)])
def test_sample_burn_in_must_leave_steps(n_steps: int, burn_in: int) -> None:
    with pytest.raises(ValueError, match="burn_in"):
        sample(SGLD(step_size=0.1), _grad, torch.zeros(2, 1), n_steps, burn_in=burn_in)


@pytest.mark.parametrize("n_steps", [0, -3, 2.5, True, "10"])
def test_sample_n_steps(n_steps) -> None:
    with pytest.raises(ValueError, match="n_steps"):
        sample(SGLD(step_size=0.1), _grad, torch.zeros(2, 1), n_steps)


@pytest.mark.parametrize(("burn_in", "thin"), [(0, 11), (5, 6), (9, 2)])
def test_sample_thin_that_keeps_no_draw(burn_in: int, thin: int) -> None:
    with pytest.raises(ValueError, match="thin"):
        sample(SGLD(step_size=0.1), _grad, torch.zeros(2, 1), 10, burn_in=burn_in, thin=thin)


@pytest.mark.parametrize(("field", "value"), [("thin", 0), ("thin", 1.5), ("burn_in", -1), ("burn_in", 0.5)])
def test_sample_bad_integers(field: str, value) -> None:
    with pytest.raises(ValueError, match=field):
        sample(SGLD(step_size=0.1), _grad, torch.zeros(2, 1), 10, **{field: value})


@pytest.mark.parametrize("init", [[0.0, 1.0], [torch.zeros(2)], 0.5, torch.tensor(1.0), torch.zeros(0, 3)])
def test_sample_init_must_be_a_tensor_of_chains(init) -> None:
    with pytest.raises(ValueError, match="init"):
        sample(SGLD(step_size=0.1), _grad, init, 10)


def test_sample_needs_a_sampler() -> None:
    with pytest.raises(TypeError, match="sampler"):
        sample("sgld", _grad, torch.zeros(2, 1), 10)


# ----------------------------------------------------------------------------------------------------------
# step()
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize(
    "grad",
    [torch.zeros(3, 5), torch.zeros(3), torch.zeros(5, 3), [torch.zeros(3, 4), torch.zeros(1)]],
    ids=["wider", "flat", "transposed", "extra-tensor"],
)
def test_step_with_mismatched_grad(name: str, grad) -> None:
    sampler = make_sampler(name, step_size=0.1)
    x = torch.ones(3, 4)
    state = sampler.init(x)
    with pytest.raises(ValueError, match="grad"):
        sampler.step(state, grad)
    assert torch.equal(x, torch.ones(3, 4))


@pytest.mark.parametrize("name", BUILT_IN)
def test_step_with_a_grad_that_is_not_a_tensor(name: str) -> None:
    sampler = make_sampler(name, step_size=0.1)
    state = sampler.init(torch.ones(3, 4))
    with pytest.raises(TypeError, match="grad"):
        sampler.step(state, [[1.0] * 4] * 3)


@pytest.mark.parametrize("name", BUILT_IN)
def test_step_with_mismatched_noise_changes_nothing(name: str) -> None:
    """A refused step leaves the state as it was (the noise is checked before any in-place update)."""
    sampler = make_sampler(name, step_size=0.1)
    x = torch.ones(3, 4)
    state = sampler.init(x)
    state = sampler.step(state, torch.full((3, 4), 0.5), torch.Generator().manual_seed(0))
    before = [t.clone() for t in [state.position, *[b for f in state[2:] if isinstance(f, list) for b in f]]]
    with pytest.raises(ValueError, match="noise"):
        sampler.step(state, torch.ones(3, 4), noise=torch.zeros(3, 5))
    after = [state.position, *[b for f in state[2:] if isinstance(f, list) for b in f]]
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)


def test_init_position_must_be_tensors() -> None:
    for sampler in (SGLD(step_size=0.1), SGHMC(step_size=0.1), PSGLD(step_size=0.1)):
        for bad in ([], [1.0, 2.0], "x", None):
            with pytest.raises(TypeError, match="position"):
                sampler.init(bad)
