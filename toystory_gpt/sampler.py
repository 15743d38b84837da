"""Sampling: temperature / top-k picking of the next token from a batch of rows' logits, each row with its own
settings and random generator, so that a row's draw never depends on the rows beside it."""

from __future__ import annotations

import numpy as np

# An empty prompt starts the text as if at the beginning of a line.
START = "\n"


class Settings:
    """Rows' temperatures and top-ks (n,), and what sampling derives from them, worked out once for as long as the
    rows stay the same: a pool's tick then runs only the arithmetic (on a few rows, each NumPy call costs more than
    the numbers it computes)."""

    def __init__(self, temperature, top_k, vocab_size: int):
        temperature = np.atleast_1d(np.asarray(temperature, np.float64))
        top_k = np.full(len(temperature), top_k, np.int64) if np.ndim(top_k) == 0 else np.asarray(top_k, np.int64)
        greedy = temperature == 0
        self.greedy = greedy if greedy.any() else None  # None: no row is greedy
        self.divisor = np.where(greedy, 1.0, temperature)[:, None]
        cut = (top_k > 0) & (top_k < vocab_size)
        self.cut = cut if cut.any() else None  # None: no row keeps only its top k
        self.kth = (np.arange(cut.sum()), top_k[cut] - 1)  # where each cut row's k-th largest logit is, sorted
        self.drawn = temperature > 0  # rows that draw; the others take the argmax
        self.everyone = bool(self.drawn.all())
        self.anyone = bool(self.drawn.any())

    def odds(self, logits: np.ndarray) -> np.ndarray:
        """Unnormalised sampling weights in float64 (n, V) for ``logits`` (n, V): the softmax of
        ``logits / temperature``, scaled so that the likeliest token weighs 1, with everything below the k-th
        largest logit cut to 0 (tokens tied with it all stay in; ``top_k`` 0 keeps all). At temperature 0 only
        the likeliest tokens are left. Row by row: a row's weights never depend on the rows beside it.

        In NumPy on purpose: these are a few dozen numbers a row, and torch's per-call overhead would rival a
        model step."""
        # Shift first, so the likeliest logit is 0 and the rest negative, and divide in float64: a tiny
        # temperature then gives -inf (weight 0) instead of overflowing to inf and a NaN softmax.
        z = (logits - np.maximum.reduce(logits, axis=1, keepdims=True)).astype(np.float64)
        with np.errstate(over="ignore"):
            z /= self.divisor
        if self.greedy is not None:
            z[self.greedy] = np.where(z[self.greedy] == 0, 0.0, -np.inf)
        if self.cut is not None:
            kth = -np.sort(-z[self.cut], axis=1)[self.kth]
            z[self.cut] = np.where(z[self.cut] < kth[:, None], -np.inf, z[self.cut])
        return np.exp(z, out=z)


def odds(logits: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """``Settings.odds`` of ``logits`` (V,) or (n, V), one temperature and top-k for every row, shaped as ``logits``."""
    z = np.atleast_2d(logits)
    weights = Settings(np.full(len(z), temperature), top_k, z.shape[1]).odds(z)
    return weights if np.ndim(logits) == 2 else weights[0]


def distribution(logits: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """The probabilities (V,) that ``pick`` draws the next token from (at temperature 0: ties share the argmax)."""
    weights = odds(logits, temperature, top_k)
    return weights / weights.sum()


def pick(logits: np.ndarray, settings: Settings, uniform: np.ndarray) -> np.ndarray:
    """Choose each row's next token (n,) from ``logits`` (n, V): greedy at temperature 0, else where the row's
    ``uniform`` draw (n,), from [0, 1), falls in its ``odds`` (greedy rows' draws count for nothing)."""
    if not settings.anyone:
        return np.argmax(logits, axis=1)
    cdf = np.cumsum(settings.odds(logits), axis=1)
    # Unnormalised: the likeliest weighs 1, so each total is >= 1. Counting the steps at or below u * total is
    # searchsorted(side="right"): it never lands on a zero-probability token (its step is empty). Should u * total
    # round up to the total itself, the last token with any probability is taken.
    chosen = np.add.reduce(cdf <= (uniform * cdf[:, -1])[:, None], axis=1)
    if np.maximum.reduce(chosen) == cdf.shape[1]:
        over = chosen == cdf.shape[1]
        chosen[over] = np.argmax(cdf[over] == cdf[over, -1:], axis=1)
    return chosen if settings.everyone else np.where(settings.drawn, chosen, np.argmax(logits, axis=1))


class Draws:
    """Each of ``rows`` rows' next uniform draws from its own generator, taken ``DRAWS`` at a time: the same numbers
    in the same order as one call a draw, and a tick reads every row's next draw with one indexing."""

    DRAWS = 256

    def __init__(self, rows: int):
        self.ahead = np.zeros((rows, self.DRAWS))
        self.used = np.zeros(rows, np.int64)
        self.rngs: list[np.random.Generator | None] = [None] * rows
        self.rows = np.arange(rows)
        self.left = 0  # ticks for which every row in use still has draws taken ahead: no row is checked till then

    def start(self, row: int, rng: np.random.Generator) -> None:
        """Row ``row`` now draws from ``rng``."""
        self.rngs[row] = rng
        self._refill(row)

    def next(self, n: int, drawing: np.ndarray) -> np.ndarray:
        """The first ``n`` rows' next draws (n,); only the rows ``drawing`` (n,) use theirs up."""
        if self.left <= 0:
            for row in np.flatnonzero(self.used[:n] == self.DRAWS):
                self._refill(row)
            self.left = self.DRAWS - int(self.used[:n].max())
        self.left -= 1
        draws = self.ahead[self.rows[:n], self.used[:n]]
        self.used[:n] += drawing
        return draws

    def move(self, source: int, target: int) -> None:
        self.ahead[target] = self.ahead[source]
        self.used[target] = self.used[source]
        self.rngs[target] = self.rngs[source]

    def _refill(self, row: int) -> None:
        self.ahead[row] = self.rngs[row].random(self.DRAWS)
        self.used[row] = 0
