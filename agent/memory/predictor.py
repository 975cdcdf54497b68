"""Bayesian forecast of each tenant's next requests, from its arrival history.

Per tenant the arrival rate is Gamma(alpha, beta)-distributed; arrivals add to alpha, elapsed time
(exposure) adds to beta, and all evidence is discounted exponentially (half-life ``half_life_s``), so a
tenant that goes quiet cools back to the prior and one that bursts warms up within seconds.
The predictive probability of at least one request in the next ``h`` seconds is the negative-binomial
P(N >= 1) = 1 - (beta / (beta + h)) ** alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PRIOR_ALPHA = 0.1  # weak prior: 0.1 requests ...
PRIOR_BETA = 10.0  # ... per 10 s, i.e. a new tenant is assumed lukewarm (0.01 req/s)


@dataclass
class _Posterior:
    alpha: float = PRIOR_ALPHA
    beta: float = PRIOR_BETA
    at: float = 0.0  # time of the last update


@dataclass
class ArrivalPredictor:
    half_life_s: float = 30.0
    _post: dict[str, _Posterior] = field(default_factory=dict)

    def _advance(self, tenant: str, now: float) -> _Posterior:
        p = self._post.get(tenant)
        if p is None:
            p = self._post[tenant] = _Posterior(at=now)
            return p
        dt = now - p.at
        if dt > 0:
            decay = math.pow(0.5, dt / self.half_life_s)
            # evidence fades towards the prior; the elapsed time is exposure, itself discounted:
            # the integral of 2^(-s/h) over the last dt seconds is (h / ln 2) (1 - 2^(-dt/h))
            p.alpha = PRIOR_ALPHA + (p.alpha - PRIOR_ALPHA) * decay
            p.beta = PRIOR_BETA + (p.beta - PRIOR_BETA) * decay + self.half_life_s / math.log(2) * (1 - decay)
            p.at = now
        return p

    def observe(self, tenant: str, now: float, count: int = 1) -> None:
        """``count`` requests for ``tenant`` arrived at ``now``."""
        self._advance(tenant, now).alpha += count

    def rate(self, tenant: str, now: float) -> float:
        """Posterior mean arrival rate, requests per second."""
        p = self._advance(tenant, now)
        return p.alpha / p.beta

    def p_next(self, tenant: str, now: float, horizon_s: float) -> float:
        """Probability of at least one request in the next ``horizon_s`` seconds."""
        p = self._advance(tenant, now)
        return 1.0 - math.pow(p.beta / (p.beta + horizon_s), p.alpha)

    def forget(self, tenant: str) -> None:
        self._post.pop(tenant, None)
