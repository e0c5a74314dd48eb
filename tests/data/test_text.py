"""Text sources: the Markov chain's entropy rate against brute force, its stationarity, deterministic contiguous
splits of a user's file, the vocabulary from the training block and unknown tokens, bad input."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from localentropy.data import load_data
from localentropy.data.text import UNKNOWN, MarkovSource, check_text_options, count_model_bits


def _brute_force_rate(chain: MarkovSource) -> float:
    """H(X_1..X_n) - H(X_1..X_{n-1}) for n = order + 2, by enumerating every sequence, from a stationary law found
    independently (the eigenvector of the dense transition matrix on contexts)."""
    m, k = chain.alphabet, chain.order
    states = m**k
    dense = np.zeros((states, states))
    for c in range(states):
        for a in range(m):
            dense[c, (c * m + a) % states] += chain.transitions[c, a]
    values, vectors = np.linalg.eig(dense.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    pi = pi / pi.sum()

    def block_entropy(n: int) -> float:
        total = 0.0
        for seq in itertools.product(range(m), repeat=n):
            context = sum(s * m ** (k - 1 - i) for i, s in enumerate(seq[:k]))
            p = pi[context]
            for s in seq[k:]:
                p *= chain.transitions[context, s]
                context = (context * m + s) % states
            total -= p * math.log2(p)
        return total

    return block_entropy(k + 2) - block_entropy(k + 1)


@pytest.mark.parametrize(
    ("order", "alphabet", "concentration", "seed"), [(1, 3, 0.5, 0), (2, 2, 0.3, 1), (2, 3, 1.0, 2), (3, 2, 0.2, 3)]
)
def test_entropy_rate_matches_brute_force(order: int, alphabet: int, concentration: float, seed: int) -> None:
    chain = MarkovSource(order, alphabet, concentration, seed)
    assert chain.entropy_rate == pytest.approx(_brute_force_rate(chain), abs=1e-10)
    assert 0 < chain.entropy_rate < math.log2(alphabet)


def test_chain_is_irreducible_aperiodic_and_starts_stationary() -> None:
    chain = MarkovSource(2, 4, 0.05, 7)  # a small concentration: many Dirichlet draws are zero in floating point
    assert (chain.transitions > 0).all()  # every transition possible: irreducible, aperiodic
    assert chain.stationary.sum() == pytest.approx(1.0)
    # started from the stationary law, the first symbol has the stationary law of a context's newest symbol
    starts = np.array([chain.sample(1, seed=s)[0] for s in range(4000)])
    newest = chain.stationary.reshape(4, 4).sum(axis=0)
    counts = np.bincount(starts, minlength=4)
    se = np.sqrt(4000 * newest * (1 - newest))
    assert np.all(np.abs(counts - 4000 * newest) < 5 * se)


def test_markov_text_is_seeded_and_reports_its_floor() -> None:
    a = load_data("markov-text", options={"length": 5000, "chain_seed": 3})
    b = load_data("markov-text", options={"length": 5000, "chain_seed": 3}, seed=99)  # the training seed: unused
    c = load_data("markov-text", options={"length": 5000, "chain_seed": 4})
    assert a.train.tokens.equal(b.train.tokens) and not a.train.tokens.equal(c.train.tokens)
    assert a.input_shape == () and a.num_classes == 24
    assert a.info["entropy_rate_bits"] == pytest.approx(MarkovSource(2, 24, 0.3, 3).entropy_rate)
    assert a.sizes() == {"train": 3499, "validation": 499, "test": 999}


def test_each_run_seed_samples_its_own_text_of_the_same_source_when_asked() -> None:
    options = {"length": 5000, "chain_seed": 3, "sample_seed": "run"}
    a, again, b = (load_data("markov-text", options=options, seed=s) for s in (1, 1, 2))
    assert a.train.tokens.equal(again.train.tokens) and not a.train.tokens.equal(b.train.tokens)
    assert a.info["entropy_rate_bits"] == b.info["entropy_rate_bits"]  # one source, two samples
    assert a.info["sample_seed"] != b.info["sample_seed"]
    fixed = load_data("markov-text", options={**options, "sample_seed": 4}, seed=9)
    default = load_data("markov-text", options={"length": 5000, "chain_seed": 3}, seed=9)
    assert fixed.train.tokens.equal(default.train.tokens)  # the default is chain_seed + 1 = 4
    for bad in (-1, 1.5, "seed", True):
        assert check_text_options("markov-text", {"sample_seed": bad}) == [
            f'data.options.sample_seed: "run" (a text per training seed) or an integer >= 0, got {bad!r}'
        ]


def test_the_count_model_is_the_smoothed_frequency_and_reaches_the_floor_on_long_text() -> None:
    # order 1 over 2 symbols, by hand: training pairs 01, 10, 01, 11 -> n(0) = (0, 2), n(1) = (1, 1);
    # P(1 | 0) = (2 + 1/2) / (2 + 1), P(0 | 1) = (1 + 1/2) / (2 + 1); held-out 0 1 0: -(log2(5/6) + log2(1/2)) / 2
    value = count_model_bits(np.array([0, 1, 0, 1, 1]), np.array([0, 1, 0]), order=1, alphabet=2)
    assert value == pytest.approx(-(np.log2(5 / 6) + np.log2(1 / 2)) / 2)
    chain = MarkovSource(2, 6, 0.3, 0)
    ids = chain.sample(400_000, seed=1)
    held_out = chain.sample(100_000, seed=2)
    losses = -np.log2(chain.transitions[held_out[:-2] * 6 + held_out[1:-1], held_out[2:]])
    exact_on_sample = losses.mean()  # the true model's loss on the same held-out symbols
    se = losses.std() / np.sqrt(len(losses))
    fitted = count_model_bits(ids, held_out, order=2, alphabet=6)
    # 180 probabilities estimated from 400 000 pairs cost about 180 / (2 n ln 2) = 3e-4 bits in expectation
    assert abs(fitted - exact_on_sample) < 0.003 and se < 0.01


def test_text_file_splits_are_contiguous_and_deterministic(tmp_path: Path) -> None:
    text = "abcab" * 160 + "xyz" * 100  # 1,100 characters; x, y, z only in the held-out blocks
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    a = load_data("text", path=path, validation_fraction=0.1, test_fraction=0.2)
    b = load_data("text", path=path, validation_fraction=0.1, test_fraction=0.2, seed=5)
    vocab = a.info["vocabulary"]
    assert vocab == [UNKNOWN, "a", "b", "c"] and a.num_classes == 4
    decoded = "".join(vocab[i] for i in a.train.tokens.tolist())
    assert decoded == text[:770]  # the first 70 %, in order
    for split in ("train", "validation", "test"):
        assert getattr(a, split).tokens.equal(getattr(b, split).tokens)
    assert a.info["unknown_tokens"] == 300 and int((a.test.tokens == 0).sum()) == 220


def test_word_unit_marks_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_text("the cat sat\nthe dog\n" * 20, encoding="utf-8")
    data = load_data("text", path=path, options={"unit": "word"}, validation_fraction=0.0, test_fraction=0.2)
    vocab = data.info["vocabulary"]
    assert set(vocab) == {UNKNOWN, "the", "cat", "sat", "dog", "<eos>"}
    assert [vocab[i] for i in data.train.tokens[:6].tolist()] == ["the", "cat", "sat", "<eos>", "the", "dog"]


def test_bad_text_input_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_data("text", path=bad)
    with pytest.raises(ValueError, match="no such file"):
        load_data("text", path=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="give its path"):
        load_data("text")
    assert check_text_options("markov-text", {"order": 0, "colour": 1}) == [
        "data.options.colour: unknown for source 'markov-text'; allowed: alphabet, chain_seed, concentration, "
        "length, order, sample_seed",
        "data.options.order: an integer in [1, 8], got 0",
    ]
    assert "contexts" in check_text_options("markov-text", {"order": 8, "alphabet": 40})[0]
    assert "unit" in check_text_options("text", {"unit": "byte"})[0]
    with pytest.raises(ValueError, match="takes no options"):
        load_data("digits", options={"order": 2})
