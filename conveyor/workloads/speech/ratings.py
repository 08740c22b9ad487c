"""A resource's rating from its attempts' scores and its impressions.

    average  = mean of the finished attempts' scores (0-100), None with no attempt
    quality  = (sum of scores + PRIOR_MEAN * PRIOR_WEIGHT) / (attempts + PRIOR_WEIGHT)
    practice = attempts / max(impressions, attempts)     (0 with no attempt)
    rating   = round(0.9 * quality + 10 * practice, 2)   (0-100)

``quality`` is a Bayesian average: a resource read once with a perfect score
does not outrank one read a hundred times at 95. ``practice`` is the share
of the times it was shown that somebody read it. The same inputs always give
the same figures, so running a recalculation twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PRIOR_MEAN", "PRIOR_WEIGHT", "Rating", "compute_rating"]

PRIOR_MEAN = 50.0
PRIOR_WEIGHT = 5.0


@dataclass(frozen=True, slots=True)
class Rating:
    rating: float
    average_score: float | None
    attempts: int
    impressions: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "rating": self.rating,
            "average_score": self.average_score,
            "attempts": self.attempts,
            "impressions": self.impressions,
        }


def compute_rating(scores: Sequence[float], impressions: int) -> Rating:
    n = len(scores)
    total = float(sum(scores))
    average = round(total / n, 2) if n else None
    quality = (total + PRIOR_MEAN * PRIOR_WEIGHT) / (n + PRIOR_WEIGHT)
    practice = n / max(impressions, n) if n else 0.0
    return Rating(round(0.9 * quality + 10.0 * practice, 2), average, n, impressions)
