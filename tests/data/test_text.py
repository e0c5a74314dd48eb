"""Text sources: the Markov chain's entropy rate against brute force, its stationarity, deterministic contiguous
splits of a user's file, the vocabulary from the training block and unknown tokens, bad input."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from localentropy.data import load_data
from localentropy.data.text import UNKNOWN, MarkovSource, check_text_options


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
        "length, order",
        "data.options.order: an integer in [1, 8], got 0",
    ]
    assert "contexts" in check_text_options("markov-text", {"order": 8, "alphabet": 40})[0]
    assert "unit" in check_text_options("text", {"unit": "byte"})[0]
    with pytest.raises(ValueError, match="takes no options"):
        load_data("digits", options={"order": 2})
