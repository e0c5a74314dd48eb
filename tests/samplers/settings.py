"""Small step sizes every built-in sampler accepts in the noise and buffer tests (MALA also needs a potential,
cyclical a base sampler)."""

SETTINGS = {
    "sgld": {"step_size": 0.01},
    "sghmc": {"step_size": 0.01, "friction": 0.3},
    "psgld": {"step_size": 0.01},
    "msgld": {"step_size": 0.01, "momentum": 0.5, "nesterov": True},
    "sgnht": {"step_size": 0.05},
    "baoab": {"step_size": 0.05},
}
