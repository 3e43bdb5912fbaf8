"""What a run's rounds spend of a privacy budget: Google's ``dp-accounting``, never our own maths.

Each round is one event: the Gaussian mechanism on the sum of the round's clipped uploads, with
noise multiplier sigma (standard deviation ``sigma * C``), applied to the devices the round
sampled. Which event depends on how they were sampled:

- **every device, every round** (the paper's protocol, or K = N): ``GaussianDpEvent(sigma)``,
  neighbours differ by adding or removing one device's data (sensitivity C);
- **Poisson sampling** (each device in with probability q = K / N, ``sampling="poisson"``):
  ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))``, add or remove one device; the case the
  amplification-by-sampling theorem of DP-FedAvg (McMahan et al. 2018) covers;
- **exactly K of N** (``sampling="uniform"``): ``SampledWithoutReplacementDpEvent(N, K,
  GaussianDpEvent(sigma / 2))``, neighbours differ by replacing one device's data, which moves
  the clipped sum by up to 2C (hence sigma / 2: the ratio of the noise to that sensitivity).

The run composes one event per round; epsilon at ``delta`` is the accountant's: ``"pld"``
(privacy loss distributions, tight; the default) or ``"rdp"`` (Renyi DP, an upper bound that can
be loose by 10 % or more; the only one of the two that knows sampling exactly K, used there).

Example::

    >>> accountant = PrivacyAccountant(1.0, delta=1e-5, num_devices=1000, per_round=50, sampling="poisson")
    >>> round(accountant.epsilon(200), 2)
    4.77
    >>> accountant.rounds_within(3.0, limit=1000)  # the most rounds that stay within epsilon 3
    68
    >>> round(PrivacyAccountant(1.0, 1e-5, 1000, 50, "poisson", accountant="rdp").epsilon(200), 2)
    5.37
"""

import dp_accounting
from dp_accounting import pld, rdp

ADD_OR_REMOVE, REPLACE = "add or remove one device", "replace one device"
ACCOUNTANTS = ("pld", "rdp")


class PrivacyAccountant:
    """The privacy spent by rounds of DP-FedAvg; see the module docstring.

    Args:
        noise_multiplier: sigma, the noise's standard deviation over the clip norm.
        delta: the delta of the (epsilon, delta) guarantee.
        num_devices: N.
        per_round: K, the devices sampled per round (Poisson: their expected number).
        sampling: ``"uniform"`` (exactly K) or ``"poisson"``; K = N means every device.
        accountant: ``"pld"`` or ``"rdp"``; None: pld, or rdp for exactly K of N (pld does not know it).
    """

    def __init__(
        self, noise_multiplier: float, delta: float, num_devices: int, per_round: int, sampling: str,
        accountant: str | None = None,
    ) -> None:  # fmt: skip
        self.noise_multiplier, self.delta = float(noise_multiplier), float(delta)
        self.num_devices, self.per_round, self.sampling = int(num_devices), int(per_round), sampling
        self.kind = accountant or ("rdp" if self._without_replacement else "pld")
        if self.kind not in ACCOUNTANTS:
            raise ValueError(f"dp_accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
        if self.kind == "pld" and self._without_replacement:
            raise ValueError(
                "dp_accountant='pld' does not know sampling exactly K of N devices; use sampling='poisson' "
                "or dp_accountant='rdp'"
            )
        self._epsilons: dict[int, float] = {}

    @property
    def neighbours(self) -> str:
        """Which datasets the guarantee calls neighbours (differing in one device's data)."""
        return REPLACE if self._without_replacement else ADD_OR_REMOVE

    @property
    def _without_replacement(self) -> bool:
        return self.sampling != "poisson" and self.per_round < self.num_devices

    def round_event(self, noise_multiplier: float | None = None) -> dp_accounting.DpEvent:
        """One round's event (with ``noise_multiplier``, by default the accountant's)."""
        sigma = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        if self.sampling == "poisson":
            return dp_accounting.PoissonSampledDpEvent(
                self.per_round / self.num_devices, dp_accounting.GaussianDpEvent(sigma)
            )
        if self._without_replacement:
            return dp_accounting.SampledWithoutReplacementDpEvent(
                self.num_devices, self.per_round, dp_accounting.GaussianDpEvent(sigma / 2)
            )
        return dp_accounting.GaussianDpEvent(sigma)

    def _fresh(self) -> dp_accounting.PrivacyAccountant:
        relation = dp_accounting.NeighboringRelation
        if self.kind == "pld":
            # a grid of 1e-3 in privacy loss: ten times faster than the default 1e-4, epsilon within 1e-5 of
            # it here, and still an upper bound (the pessimistic estimate)
            return pld.PLDAccountant(relation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-3)
        return rdp.RdpAccountant(
            neighboring_relation=relation.REPLACE_ONE
            if self._without_replacement
            else relation.ADD_OR_REMOVE_ONE
        )

    def epsilon(self, rounds: int) -> float:
        """Epsilon at ``delta`` after ``rounds`` rounds (0 rounds: 0)."""
        if rounds <= 0:
            return 0.0
        if rounds not in self._epsilons:
            accountant = self._fresh()
            accountant.compose(dp_accounting.SelfComposedDpEvent(self.round_event(), rounds))
            self._epsilons[rounds] = float(accountant.get_epsilon(self.delta))
        return self._epsilons[rounds]

    def rounds_within(self, epsilon: float, limit: int) -> int:
        """The most rounds, up to ``limit``, whose epsilon is at most ``epsilon`` (bisection:
        epsilon grows with the rounds)."""
        low, high = 0, int(limit)
        if self.epsilon(high) <= epsilon:
            return high
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self.epsilon(middle) <= epsilon else (low, middle)
        return low

    def calibrated(self, target_epsilon: float, rounds: int) -> float:
        """The smallest noise multiplier whose ``rounds`` rounds spend at most ``target_epsilon``."""

        def event(sigma: float) -> dp_accounting.DpEvent:
            return dp_accounting.SelfComposedDpEvent(self.round_event(sigma), rounds)

        try:
            sigma = dp_accounting.calibrate_dp_mechanism(
                self._fresh, event, target_epsilon, self.delta,
                bracket_interval=dp_accounting.LowerEndpointAndGuess(0.1, 1.0), tol=1e-4,
            )  # fmt: skip
        except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError:
            raise ValueError(
                f"target_epsilon={target_epsilon:g} is met by {rounds} rounds with a noise multiplier below "
                "0.1 (next to no noise); give dp_noise_multiplier, or a smaller target_epsilon"
            ) from None
        return float(sigma) + 1e-4  # the tolerance's side that stays within the budget
