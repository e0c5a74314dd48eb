# ruff: noqa: F403, F405
"""LPF-SGD: filter norms, noise per row, the sigma schedule and the averaged perturbed gradient."""

from __future__ import annotations

from tests.entropy.optim.helpers import *

# ---------------------------------------------------------------------------------------------------------
# LPF-SGD
# ---------------------------------------------------------------------------------------------------------


def test_filter_norms_shapes_and_values():
    weight = torch.randn(5, 3, generator=gen(0))
    conv = torch.randn(4, 3, 2, 2, generator=gen(1))
    bias = torch.randn(5, generator=gen(2))
    scalar = torch.tensor(-2.0)
    assert filter_norms(weight).shape == (5, 1)
    torch.testing.assert_close(filter_norms(weight)[:, 0], weight.norm(dim=1))
    assert filter_norms(conv).shape == (4, 1, 1, 1)
    torch.testing.assert_close(filter_norms(conv).flatten(), conv.flatten(1).norm(dim=1))
    assert filter_norms(bias).shape == (1,)
    torch.testing.assert_close(filter_norms(bias), bias.norm().reshape(1))
    assert filter_norms(scalar).shape == ()  # regression: a 0-d parameter used to break LPFSGD's in-place noise
    assert float(filter_norms(scalar)) == 2.0


def lpf_model():
    torch.manual_seed(0)
    return nn.Linear(3, 4).double()


def test_lpfsgd_calls_the_closure_n_samples_times_with_the_regenerated_noise():
    model, sigma, n_samples = lpf_model(), 0.05, 3
    x = torch.randn(8, 3, generator=gen(9), dtype=F64)
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in model.parameters()])
        model.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss.detach()

    opt = LPFSGD(model.parameters(), lr=0.0, sigma=sigma, n_samples=n_samples, generator=gen(4))
    hand_gen = gen(4)
    for t in range(1, 3):
        origin = [p.detach().clone() for p in model.parameters()]
        seen.clear()
        opt.step(closure)
        assert len(seen) == n_samples and opt.grad_evals == n_samples * t and opt.outer_steps == t
        for perturbed in seen:
            for p0, q in zip(origin, perturbed, strict=True):
                xi = torch.empty_like(p0).normal_(generator=hand_gen)
                torch.testing.assert_close(q - p0, xi * sigma * filter_norms(p0), rtol=1e-9, atol=1e-15)


def test_lpfsgd_noise_std_per_row_is_sigma_times_row_norm():
    """Statistical check: per output row, the sample std of the perturbations over N draws is within 5 standard
    errors (1 / sqrt(2 (n - 1)) relative, Gaussian) of sigma ||row||."""
    model, sigma, steps = lpf_model(), 0.1, 300
    origin = [p.detach().clone() for p in model.parameters()]
    deltas: list[list[torch.Tensor]] = [[], []]

    def closure():
        for i, (p, p0) in enumerate(zip(model.parameters(), origin, strict=True)):
            deltas[i].append(p.detach() - p0)
        model.zero_grad()
        loss = model(torch.ones(1, 3, dtype=F64)).sum()
        loss.backward()
        return loss.detach()

    opt = LPFSGD(model.parameters(), lr=0.0, sigma=sigma, momentum=0.0, generator=gen(8))
    for _ in range(steps):
        opt.step(closure)
    weight_deltas = torch.stack(deltas[0])  # (steps, 4, 3)
    bias_deltas = torch.stack(deltas[1])  # (steps, 4)
    for row in range(4):
        draws = weight_deltas[:, row, :].flatten()
        expected = sigma * float(origin[0][row].norm())
        se = 1 / math.sqrt(2 * (draws.numel() - 1))
        assert abs(float(draws.std()) / expected - 1) < 5 * se
        assert abs(float(draws.mean())) < 5 * expected / math.sqrt(draws.numel())
    bias_draws = bias_deltas.flatten()
    expected = sigma * float(origin[1].norm())
    assert abs(float(bias_draws.std()) / expected - 1) < 5 / math.sqrt(2 * (bias_draws.numel() - 1))


def test_lpfsgd_cosine_sigma_schedule():
    sigma, growth, total = 1e-3, 15.0, 4
    param = nn.Parameter(X0.clone())
    opt = LPFSGD([param], lr=0.0, sigma=sigma, sigma_schedule="cosine", sigma_growth=growth, total_steps=total)
    closure = quadratic_closure(param, A2, B2)
    seen = {}
    for t in range(total + 2):
        seen[t] = opt.current_sigmas()[0]
        opt.step(closure)
    assert seen[0] == pytest.approx(sigma, rel=1e-15)
    assert seen[total // 2] == pytest.approx(sigma * (1 + (growth - 1) / 2), rel=1e-14)
    assert seen[total] == pytest.approx(sigma * growth, rel=1e-14)
    assert seen[total + 1] == pytest.approx(sigma * growth, rel=1e-14)  # held after total_steps
    assert all(seen[t] < seen[t + 1] for t in range(total))


@pytest.mark.parametrize("nesterov", [False, True])
def test_lpfsgd_step_is_sgd_momentum_on_the_averaged_perturbed_gradient(nesterov):
    sigma, lr, n_samples = 0.1, 0.1, 3
    param = nn.Parameter(X0.clone())
    opt = LPFSGD([param], lr=lr, sigma=sigma, n_samples=n_samples, momentum=0.9, nesterov=nesterov, generator=gen(6))
    closure = quadratic_closure(param, A2, B2)
    hand_gen, x, outer = gen(6), X0.clone(), HandSGD(lr, 0.9, nesterov)
    for _ in range(3):
        norm = x.norm()  # a 1-D parameter: the whole tensor's norm
        grads = [grad2(x + sigma * norm * torch.empty(2, dtype=F64).normal_(generator=hand_gen)) for _ in range(3)]
        x = outer.step(x, sum(grads) / n_samples)
        opt.step(closure)
        torch.testing.assert_close(param.detach(), x, rtol=1e-12, atol=1e-13)
