"""Sampling: temperature / top-k picking of the next token from a batch of rows' logits, each row with its own
settings and random generator, so that a row's draw never depends on the rows beside it."""

from __future__ import annotations

import numpy as np

# An empty prompt starts the text as if at the beginning of a line.
START = "\n"


def odds(logits: np.ndarray, temperature, top_k) -> np.ndarray:
    """Unnormalised sampling weights in float64, the shape of ``logits`` ((V,) or (n, V) with a temperature and
    top-k per row): the softmax of ``logits / temperature``, scaled so that the likeliest token weighs 1, with
    everything below the k-th largest logit cut to 0 (tokens tied with it all stay in; ``top_k`` 0 keeps all).
    At temperature 0 only the likeliest tokens are left.

    In NumPy on purpose: these are a few dozen numbers a row, and torch's per-call overhead would rival a model step.
    """
    z = np.atleast_2d(logits)
    n = len(z)
    temperature, top_k = _per_row(temperature, n, np.float64), _per_row(top_k, n, np.int64)
    # Shift first, so the likeliest logit is 0 and the rest negative, and divide in float64: a tiny
    # temperature then gives -inf (weight 0) instead of overflowing to inf and a NaN softmax.
    z = (z - z.max(axis=1, keepdims=True)).astype(np.float64)
    greedy = temperature == 0
    # (The branches only skip work: a handful of NumPy calls on a few numbers each cost as much as the arithmetic.)
    with np.errstate(over="ignore"):
        z /= np.where(greedy, 1.0, temperature)[:, None]
    if greedy.any():
        z[greedy] = np.where(z[greedy] == 0, 0.0, -np.inf)
    if (cut := (top_k > 0) & (top_k < z.shape[1])).any():
        kth = -np.sort(-z[cut], axis=1)[np.arange(cut.sum()), top_k[cut] - 1]
        z[cut] = np.where(z[cut] < kth[:, None], -np.inf, z[cut])
    weights = np.exp(z)
    return weights if np.ndim(logits) == 2 else weights[0]


def _per_row(value, n: int, dtype) -> np.ndarray:
    """``value`` as one number per row: a scalar repeated, an array as it is."""
    return np.full(n, value, dtype) if np.ndim(value) == 0 else np.asarray(value, dtype)


def distribution(logits: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """The probabilities (V,) that ``pick`` draws the next token from (at temperature 0: ties share the argmax)."""
    weights = odds(logits, temperature, top_k)
    return weights / weights.sum()


def pick(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Choose each row's next token (n,) from ``logits`` (n, V): greedy at temperature 0, else where the row's
    ``uniform`` draw (n,), from [0, 1), falls in ``distribution`` (greedy rows' draws are not read)."""
    temperature = np.asarray(temperature, np.float64)
    tokens = np.argmax(logits, axis=1)
    if not (drawn := temperature > 0).any():
        return tokens
    everyone = drawn.all()  # the usual case: no row to leave out, so no copies
    cdf = np.cumsum(odds(logits if everyone else logits[drawn], temperature if everyone else temperature[drawn],
                         np.asarray(top_k) if everyone else np.asarray(top_k)[drawn]), axis=1)
    # Unnormalised: the likeliest weighs 1, so each total is >= 1. Counting the steps at or below u * total is
    # searchsorted(side="right"): it never lands on a zero-probability token (its step is empty). Should u * total
    # round up to the total itself, the last token with any probability is taken.
    u = (uniform if everyone else uniform[drawn]) * cdf[:, -1]
    chosen = (cdf <= u[:, None]).sum(axis=1)
    if (over := chosen == cdf.shape[1]).any():
        chosen[over] = np.argmax(cdf[over] == cdf[over, -1:], axis=1)
    tokens[drawn] = chosen
    return tokens


class Draws:
    """Each of ``rows`` rows' next uniform draws from its own generator, taken ``DRAWS`` at a time: the same numbers
    in the same order as one call a draw, and a tick reads every row's next draw with one indexing."""

    DRAWS = 256

    def __init__(self, rows: int):
        self.ahead = np.zeros((rows, self.DRAWS))
        self.used = np.zeros(rows, np.int64)
        self.rngs: list[np.random.Generator | None] = [None] * rows

    def start(self, row: int, rng: np.random.Generator) -> None:
        """Row ``row`` now draws from ``rng``."""
        self.rngs[row] = rng
        self._refill(row)

    def next(self, n: int, drawing: np.ndarray) -> np.ndarray:
        """The first ``n`` rows' next draws (n,); only the rows ``drawing`` (n,) use theirs up."""
        rows = np.arange(n)
        if (spent := self.used[:n] == self.DRAWS).any():
            for row in np.flatnonzero(spent):
                self._refill(row)
        draws = self.ahead[rows, self.used[:n]]
        self.used[:n] += drawing
        return draws

    def move(self, source: int, target: int) -> None:
        self.ahead[target] = self.ahead[source]
        self.used[target] = self.used[source]
        self.rngs[target] = self.rngs[source]

    def _refill(self, row: int) -> None:
        self.ahead[row] = self.rngs[row].random(self.DRAWS)
        self.used[row] = 0
