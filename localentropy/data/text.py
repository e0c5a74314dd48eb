"""Text as token streams: a user's UTF-8 file (``text``) and a seeded Markov source with a known entropy rate.

``markov-text``: a Markov chain of order k over an alphabet of m symbols. Each of the m^k contexts gets a
next-symbol law drawn from a symmetric Dirichlet(``concentration``), mixed with the uniform law at weight
``MIX`` = 1e-3 so that every transition has positive probability: from any context every other is reached in
k steps and in k + 1 steps, so the chain on contexts is irreducible and aperiodic and has one stationary law
pi (a sparse linear solve for small chains, power iteration for large ones). The text starts from pi, so it is
stationary, and its entropy rate is exactly H = sum_c pi(c) H(P(. | c)) bits per symbol: the floor that no
model can beat in expectation on held-out text (a model that reads a block from its start does worse: the
first symbols have less context).

``text``: a file the user points to, read as UTF-8, tokenised into characters (``unit = "char"``) or
whitespace-separated words with an ``<eos>`` token at each line end (``"word"``, the Penn Treebank convention).
Both sources are split into train / validation / test by contiguous blocks in that order (no shuffling: the
splits depend on the text and the fractions only). The vocabulary is that of the training block; a token of
the held-out blocks not in it reads as ``<unk>`` (index 0 of a file's vocabulary), counted in the info.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

TEXT_SOURCES = ("text", "markov-text")
UNITS = ("char", "word")
UNKNOWN, END_OF_LINE = "<unk>", "<eos>"
SYMBOLS = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MIX = 1e-3  # weight of the uniform law in every transition: all positive, so irreducible and aperiodic
MAX_CONTEXTS = 1_000_000
DIRECT_BELOW = 2000
POWER_ITERATIONS = 20_000
# sample_seed: the seed of the text sampled from the chain; None: chain_seed + 1 (one text for every run), "run":
# one text per training seed (a run's seed draws its own sample of the same source)
MARKOV_DEFAULTS: dict[str, Any] = {
    "order": 2,
    "alphabet": 24,
    "concentration": 0.3,
    "length": 200_000,
    "chain_seed": 0,
    "sample_seed": None,
}
TEXT_DEFAULTS: dict[str, Any] = {"unit": "char"}
OPTIONS: dict[str, dict[str, Any]] = {"markov-text": MARKOV_DEFAULTS, "text": TEXT_DEFAULTS}


@dataclass
class TokenStream:
    """A contiguous block of text as token ids (int64, (N,)); its length is the number of next-token targets."""

    tokens: Tensor

    def __len__(self) -> int:
        return max(int(self.tokens.shape[0]) - 1, 0)


def check_text_options(source: str, options: dict[str, Any]) -> list[str]:
    """The problems of ``data.options`` for a text source, each naming its field (empty when valid)."""
    allowed = OPTIONS.get(source, {})
    problems = [
        f"data.options.{k}: unknown for source {source!r}; allowed: {', '.join(sorted(allowed)) or 'none'}"
        for k in sorted(set(options) - set(allowed))
    ]
    merged = {**allowed, **{k: v for k, v in options.items() if k in allowed}}
    if source == "text":
        if merged["unit"] not in UNITS:
            problems.append(f"data.options.unit: one of {', '.join(UNITS)}, got {merged['unit']!r}")
        return problems
    if source != "markov-text":
        return problems
    limits = {"order": (1, 8), "alphabet": (2, len(SYMBOLS)), "length": (1000, 10**8), "chain_seed": (0, 2**62)}
    for key, (low, high) in limits.items():
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"data.options.{key}: an integer in [{low}, {high}], got {value!r}")
    sample = merged["sample_seed"]
    if (
        sample is not None
        and sample != "run"
        and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 0)
    ):
        problems.append(
            f'data.options.sample_seed: "run" (a text per training seed) or an integer >= 0, got {sample!r}'
        )
    c = merged["concentration"]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (math.isfinite(c) and c > 0):
        problems.append(f"data.options.concentration: a positive number (the Dirichlet's), got {c!r}")
    if not problems and merged["alphabet"] ** merged["order"] > MAX_CONTEXTS:
        problems.append(
            f"data.options: alphabet ** order = {merged['alphabet'] ** merged['order']} contexts; at most "
            f"{MAX_CONTEXTS:,} (a smaller order or alphabet)"
        )
    return problems


class MarkovSource:
    """A stationary Markov chain of ``order`` over ``alphabet`` symbols with Dirichlet transition laws.

    ``transitions[c]`` is the next-symbol law of context c (the last ``order`` symbols, as a base-``alphabet``
    number, oldest first); ``stationary`` the law of the contexts; ``entropy_rate`` in bits per symbol.
    """

    def __init__(self, order: int, alphabet: int, concentration: float, seed: int) -> None:
        self.order, self.alphabet = int(order), int(alphabet)
        rng = np.random.Generator(np.random.PCG64(seed))
        draws = rng.dirichlet(np.full(self.alphabet, float(concentration)), size=self.alphabet**self.order)
        self.transitions = (1 - MIX) * draws + MIX / self.alphabet
        self.transitions /= self.transitions.sum(axis=1, keepdims=True)
        self.stationary = self._stationary()
        self.seed = seed

    def _stationary(self) -> np.ndarray:
        """The stationary law of the contexts: pi (P - I) = 0 with sum(pi) = 1. A sparse direct solve up to
        ``DIRECT_BELOW`` contexts (exact however slowly the chain mixes; its fill-in grows fast beyond), power
        iteration above (large chains with Dirichlet laws mix in a few dozen steps)."""
        m, size = self.alphabet, self.alphabet**self.order
        if size <= DIRECT_BELOW:
            from scipy.sparse import csr_matrix, identity, vstack
            from scipy.sparse.linalg import spsolve

            rows = np.repeat(np.arange(size), m)
            cols = (rows * m + np.tile(np.arange(m), size)) % size  # drop the oldest symbol, append the new one
            p = csr_matrix((self.transitions.reshape(-1), (rows, cols)), shape=(size, size))
            system = vstack([csr_matrix(np.ones((1, size))), (p.T - identity(size, format="csr"))[1:]]).tocsc()
            rhs = np.zeros(size)
            rhs[0] = 1.0
            pi = np.clip(np.asarray(spsolve(system, rhs), dtype=float), 0.0, None)
            return pi / pi.sum()
        shape = (m,) * self.order
        law = self.transitions.reshape(*shape, m)
        pi = np.full(size, 1.0 / size)
        for _ in range(POWER_ITERATIONS):
            new = (pi.reshape(*shape, 1) * law).sum(axis=0).reshape(-1)  # sum over the oldest symbol
            new /= new.sum()
            if np.abs(new - pi).sum() < 1e-14:
                return new
            pi = new
        raise ValueError(
            f"the chain of {size} contexts mixes too slowly for its stationary law to be found in "
            f"{POWER_ITERATIONS} power iterations: use a larger concentration or fewer contexts"
        )

    @property
    def entropy_rate(self) -> float:
        """sum_c pi(c) H(P(. | c)), in bits per symbol."""
        p = self.transitions
        return float(-(self.stationary * (p * np.log2(p)).sum(axis=1)).sum())

    def sample(self, length: int, seed: int) -> np.ndarray:
        """``length`` symbols (ids 0..alphabet-1) of the stationary chain, seeded."""
        rng = np.random.Generator(np.random.PCG64(seed))
        m, k = self.alphabet, self.order
        context = int(rng.choice(m**k, p=self.stationary))
        out = np.empty(length + k, dtype=np.int64)
        for i in range(k):  # the starting context's symbols, oldest first
            out[i] = (context // m ** (k - 1 - i)) % m
        cumulative = np.cumsum(self.transitions, axis=1)
        cumulative[:, -1] = 1.0
        tables = cumulative.tolist()  # plain lists: bisect on them is several times faster than numpy per symbol
        size = m**k
        symbols = []
        for u in rng.random(length).tolist():
            symbol = bisect.bisect_right(tables[context], u)
            symbols.append(symbol)
            context = (context * m + symbol) % size
        out[k:] = symbols
        return out[k:]


def count_model_bits(train: np.ndarray, held_out: np.ndarray, order: int, alphabet: int, pseudo: float = 0.5) -> float:
    r"""Held-out bits per symbol of the order-k count model fitted on ``train``: the baseline a model must beat.

    P(s | c) = (n(c, s) + a) / (n(c) + a m), n counted over the training block's (context, next symbol) pairs, a =
    ``pseudo`` (1/2: the Krichevsky-Trofimov estimator), m = ``alphabet``; scored on ``held_out``'s symbols after its
    first k. It knows the source's order, so it approaches the entropy rate as the training block grows, at a rate
    set by the m^(k+1) counts it must fill: what a finite training block allows without any network.
    """
    m, k = int(alphabet), int(order)

    def pairs(ids: np.ndarray) -> np.ndarray:
        context = np.zeros(len(ids) - k, dtype=np.int64)
        for j in range(k):  # oldest first, as MarkovSource numbers its contexts
            context = context * m + ids[j : len(ids) - k + j]
        return context * m + ids[k:]

    counts = np.bincount(pairs(np.asarray(train)), minlength=m ** (k + 1)).reshape(m**k, m).astype(np.float64)
    probabilities = (counts + pseudo) / (counts.sum(axis=1, keepdims=True) + pseudo * m)
    scored = pairs(np.asarray(held_out))
    return float(-np.log2(probabilities.reshape(-1)[scored]).mean())


def sample_seed(settings: dict[str, Any], run_seed: int) -> int:
    """The seed of the Markov text: ``sample_seed``, chain_seed + 1 when it is None, or one spread from the chain's
    and the run's seeds when it is "run" (numpy's SeedSequence: distinct runs, distinct texts)."""
    chosen = settings.get("sample_seed")
    if chosen == "run":
        return int(np.random.SeedSequence([int(settings["chain_seed"]), int(run_seed), 1]).generate_state(1)[0])
    return int(settings["chain_seed"]) + 1 if chosen is None else int(chosen)


def _blocks(n: int, validation_fraction: float, test_fraction: float) -> tuple[int, int]:
    """The ends of the train and validation blocks of a text of n tokens."""
    n_test = round(test_fraction * n)
    n_val = round(validation_fraction * n)
    return n - n_val - n_test, n - n_test


def _tokenise(text: str, unit: str) -> list[str]:
    if unit == "char":
        return list(text)
    return [w for line in text.splitlines() for w in (*line.split(), END_OF_LINE)]


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise ValueError(f"{path}: no such file (the 'text' source reads a UTF-8 text file)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


Streams = tuple[TokenStream, TokenStream | None, TokenStream, dict[str, Any]]


def load_text(
    source: str,
    *,
    path: str | Path | None = None,
    options: dict[str, Any] | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> Streams:
    """(train, validation or None, test, info) token streams of a text source; ``info`` holds the vocabulary.

    ``seed``: the run's seed, which draws the Markov source's text when ``options["sample_seed"]`` is "run"."""
    options = dict(options or {})
    problems = check_text_options(source, options)
    if problems:
        raise ValueError("; ".join(problems))
    settings = {**OPTIONS[source], **options}
    info: dict[str, Any] = {"source": source, "options": settings}
    if source == "markov-text":
        chain = MarkovSource(settings["order"], settings["alphabet"], settings["concentration"], settings["chain_seed"])
        info["sample_seed"] = sample_seed(settings, seed)
        ids = chain.sample(settings["length"], seed=info["sample_seed"])
        vocabulary = list(SYMBOLS[: chain.alphabet])
        info["entropy_rate_bits"] = chain.entropy_rate
        info["path"] = None
    else:
        if path is None:
            raise ValueError("the 'text' source reads a file you provide: give its path as data.path")
        path = Path(path).expanduser()
        tokens = _tokenise(_read_text(path), settings["unit"])
        info["path"] = str(path)
        train_end, _ = _blocks(len(tokens), validation_fraction, test_fraction)
        vocabulary = [UNKNOWN, *sorted(set(tokens[:train_end]) - {UNKNOWN})]
        index = {t: i for i, t in enumerate(vocabulary)}
        ids = np.fromiter((index.get(t, 0) for t in tokens), dtype=np.int64, count=len(tokens))
        info["unknown_tokens"] = int(sum(t not in index for t in tokens[train_end:]))
    train_end, val_end = _blocks(len(ids), validation_fraction, test_fraction)
    train, val, test = ids[:train_end], ids[train_end:val_end], ids[val_end:]
    if source == "markov-text":  # the baseline of the whole blocks, before any limit
        info["count_model_bits"] = count_model_bits(train, test, chain.order, chain.alphabet)
    if train_limit is not None:
        train = train[: train_limit + 1]
    if test_limit is not None:
        test = test[: test_limit + 1]
    if len(train) < 2 or len(test) < 2:
        raise ValueError(f"{source}: {len(ids)} tokens leave an empty train or test block; a longer text is needed")
    streams = [TokenStream(torch.from_numpy(np.ascontiguousarray(a))) for a in (train, val, test)]
    info["vocabulary"] = vocabulary if len(vocabulary) <= 512 else [*vocabulary[:512], "..."]
    info["vocabulary_size"] = len(vocabulary)
    info["unit"] = "char" if source == "markov-text" else settings["unit"]
    return streams[0], (streams[1] if len(val) >= 2 else None), streams[2], info
