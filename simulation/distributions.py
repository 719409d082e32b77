"""Service- and review-time distributions for scenario files, each a small pydantic model.

Every model samples from a caller's ``random.Random`` so a run is reproducible from its seed,
and states its mean so feasibility checks can be made before a run starts.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fixed(_Dist):
    """Always ``value_s`` seconds."""

    dist: Literal["fixed"]
    value_s: float = Field(ge=0)

    @property
    def mean_s(self) -> float:
        return self.value_s

    def sample(self, rng: random.Random) -> float:
        return self.value_s


class Exponential(_Dist):
    """Exponential with the given mean (memoryless: M/M/c validation uses it)."""

    dist: Literal["exponential"]
    mean: PositiveFloat

    @property
    def mean_s(self) -> float:
        return self.mean

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)


class Uniform(_Dist):
    dist: Literal["uniform"]
    low_s: float = Field(ge=0)
    high_s: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high_s < self.low_s:
            raise ValueError(f"high_s ({self.high_s}) must not be below low_s ({self.low_s})")
        return self

    @property
    def mean_s(self) -> float:
        return (self.low_s + self.high_s) / 2

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low_s, self.high_s)


class LogNormal(_Dist):
    """Log-normal given by its mean and coefficient of variation (sd / mean): right-skewed,
    the usual shape of manual handling times."""

    dist: Literal["lognormal"]
    mean: PositiveFloat
    cv: PositiveFloat = 0.5

    @property
    def mean_s(self) -> float:
        return self.mean

    def sample(self, rng: random.Random) -> float:
        sigma2 = math.log(1 + self.cv**2)
        mu = math.log(self.mean) - sigma2 / 2
        return rng.lognormvariate(mu, math.sqrt(sigma2))


Duration = Annotated[Fixed | Exponential | Uniform | LogNormal, Field(discriminator="dist")]
