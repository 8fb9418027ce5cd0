"""``ServiceTime``: a running estimate of how long the model takes for a batch of ``n`` documents.

The model's time is fitted as ``per_batch + per_item * n`` by least squares over the batches
seen, each batch's weight decaying by ``1 - alpha`` per later batch (an exponentially weighted
moving fit: recent batches count most, so the estimate follows changes of load or input mix).
The spread is tracked too: ``overrun``, the r.m.s. of how far recent batches ran past their
prediction (relative), and ``predict_high`` adds two of them, a high quantile rather than the
mean, for admission against a latency target on a machine whose speed varies.
"""

from __future__ import annotations

import math

TAIL = 2.0
"""``predict_high``: the prediction plus this many r.m.s. overruns."""


class ServiceTime:
    """Exponentially weighted least-squares fit of batch seconds on batch size.

    Until batches of two different sizes have been seen, the fit has no slope: the time is then
    taken as proportional to the size (``per_batch`` 0), which over-predicts larger batches,
    the safe side for admission. Both coefficients are kept non-negative.
    """

    def __init__(self, alpha: float = 0.1) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.batches = 0
        # Weighted sums: weight, n, t, n*n, n*t.
        self._w = self._n = self._t = self._nn = self._nt = 0.0
        self.per_batch_s = 0.0
        self.per_item_s = 0.0
        self.overrun = 0.0  # r.m.s. of recent relative overruns (seconds / predicted - 1, >= 0)
        self._overrun_sq = 0.0

    @property
    def ready(self) -> bool:
        """Whether a batch has been seen (before that, nothing is predicted)."""
        return self.batches > 0

    def observe(self, n: int, seconds: float) -> None:
        """Fold in one batch of ``n`` documents that took ``seconds``."""
        if n < 1 or not math.isfinite(seconds) or seconds < 0:
            return
        expected = self.predict(n)
        if self.ready and expected > 0:
            over = max(0.0, seconds / expected - 1)
            self._overrun_sq = (1 - self.alpha) * self._overrun_sq + self.alpha * over**2
            self.overrun = math.sqrt(self._overrun_sq)
        keep = 1 - self.alpha if self.batches else 0.0
        self._w = keep * self._w + 1
        self._n = keep * self._n + n
        self._t = keep * self._t + seconds
        self._nn = keep * self._nn + n * n
        self._nt = keep * self._nt + n * seconds
        self.batches += 1
        self._fit()

    def _fit(self) -> None:
        spread = self._w * self._nn - self._n**2  # weighted variance of n, times weight squared
        if spread > 1e-9 * self._w * self._nn:
            slope = (self._w * self._nt - self._n * self._t) / spread
            intercept = (self._t - slope * self._n) / self._w
            if slope >= 0 and intercept >= 0:
                self.per_batch_s, self.per_item_s = intercept, slope
                return
            if slope < 0:  # bigger batches not slower: a flat time
                self.per_batch_s, self.per_item_s = self._t / self._w, 0.0
                return
        # One size only, or a negative intercept: proportional, through the origin.
        self.per_batch_s, self.per_item_s = 0.0, self._nt / self._nn

    def predict(self, n: int) -> float:
        """Predicted seconds of one batch of ``n`` documents (0 before any batch)."""
        return self.per_batch_s + self.per_item_s * n if n > 0 else 0.0

    @property
    def tail_factor(self) -> float:
        """``predict_high(n) / predict(n)``: 1 plus ``TAIL`` r.m.s. overruns."""
        return 1 + TAIL * self.overrun

    def predict_high(self, n: int) -> float:
        """A high estimate of one batch's seconds: the fit plus ``TAIL`` r.m.s. overruns."""
        return self.predict(n) * self.tail_factor

    def largest_batch(self, budget_s: float) -> int | None:
        """The most documents one batch can hold within ``budget_s`` by ``predict_high`` (at
        least 1), or ``None`` when the estimate has no per-item cost (no bound)."""
        if self.per_item_s <= 0:
            return None
        fits = (budget_s / self.tail_factor - self.per_batch_s) / self.per_item_s
        return max(1, math.floor(fits + 1e-9))  # 0.3 / 0.1 is 2.9999999999999996
