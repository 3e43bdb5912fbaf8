"""Client-level differential privacy, DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018).

Three parts, each in its own file, put together here for one run:

1. every device's message is clipped to L2 norm C as the last stage of its way, after every other
   stage (:class:`~lightning_fed.privacy.clipping.ClipToNorm`): what is sent is what is bounded;
2. the server adds Gaussian noise of standard deviation sigma * C to the round's sum and divides by
   the expected number of reporting devices (:class:`~lightning_fed.privacy.noise.GaussianNoise`),
   on the public mask's coordinates only under Algorithm 1;
3. the accountant (:class:`~lightning_fed.privacy.accountant.PrivacyAccountant`, Google's
   ``dp-accounting``) composes one event per round: epsilon spent so far, sigma calibrated to a
   target epsilon for the run's planned rounds, and the round at which the budget is spent.

The guarantee is central DP: the server is trusted to add the noise and sees each upload (secure
aggregation is what hides those). Neighbouring datasets differ in one device's data, whatever its
size (client-level, or user-level, DP).

Example::

    >>> dp = DPFedAvg(clip=1.0, noise_multiplier=1.0, delta=1e-5, num_devices=1000, per_round=50,
    ...               sampling="poisson", seed=0)
    >>> dp.upload_stage, dp.expected
    (ClipToNorm(1), 50.0)
    >>> dp.rounds = 200
    >>> round(dp.epsilon, 2)
    4.77
"""

import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from lightning_fed.communication import SparseCodec
from lightning_fed.federation.messages import Message
from lightning_fed.privacy.accountant import PrivacyAccountant
from lightning_fed.privacy.adaptive_clip import AdaptiveClip, update_noise_multiplier
from lightning_fed.privacy.clipping import ClipToNorm
from lightning_fed.privacy.noise import GaussianNoise
from lightning_fed.privacy.options import check_public_mask

CLIP_BIT = "clip_bit"  # a device's message: whether its update was within the clip
BIT_CODEC = SparseCodec()  # lossless: the bit arrives as sent


class DPFedAvg:
    """One run's client-level DP: the clip stage, the server's noised average and the accountant.

    Args:
        clip: C, the L2 bound of every device's message.
        noise_multiplier: sigma; None: calibrated so that ``planned_rounds`` spend ``target_epsilon``.
        delta: the guarantee's delta.
        num_devices, per_round, sampling: N, K (Poisson: expected) and how the K are drawn.
        failure_rate: the chance a sampled device does not report (the denominator expects it).
        seed: the run's seed (the noise is drawn from it and the round).
        target_epsilon: the budget: the run stops at the last round within it (None: no budget).
        planned_rounds: the run's rounds, for the calibration and the budget.
        accountant: ``"pld"`` or ``"rdp"`` (:class:`~lightning_fed.privacy.accountant.PrivacyAccountant`).
        target_quantile: adaptive clipping's gamma (:mod:`lightning_fed.privacy.adaptive_clip`; None:
            the clip stays ``clip``, else ``clip`` is where it starts).
        clip_lr: adaptive clipping's eta.
        count_noise: the clip count's noise sigma_b (default: the expected count over 20, as the paper).
    """

    def __init__(
        self, clip: float, noise_multiplier: float | None, delta: float, num_devices: int, per_round: int,
        sampling: str, seed: int, failure_rate: float = 0.0, target_epsilon: float | None = None,
        planned_rounds: int | None = None, accountant: str | None = None,
        target_quantile: float | None = None, clip_lr: float = 0.2, count_noise: float | None = None,
    ) -> None:  # fmt: skip
        account = lambda sigma: PrivacyAccountant(sigma, delta, num_devices, per_round, sampling, accountant)  # noqa: E731
        self.accountant = account(noise_multiplier or 1.0)
        self.calibrated = noise_multiplier is None
        if self.calibrated:
            if target_epsilon is None or not planned_rounds:
                raise ValueError("give dp_noise_multiplier, or target_epsilon with the run's planned rounds")
            noise_multiplier = self.accountant.calibrated(target_epsilon, planned_rounds)
            self.accountant = account(noise_multiplier)
        self.noise_multiplier, self.target_epsilon = float(noise_multiplier), target_epsilon
        self.upload_stage = ClipToNorm(clip)
        self.expected = per_round * (1.0 - failure_rate)
        self.adaptive: AdaptiveClip | None = None
        self.bits = None  # the clip bits' transport (adaptive clipping), set by the host
        update_sigma = self.noise_multiplier
        if target_quantile is not None:
            count_noise = self.expected / 20 if count_noise is None else count_noise
            update_sigma = update_noise_multiplier(self.noise_multiplier, count_noise)
            self.adaptive = AdaptiveClip(
                self.upload_stage.bound, target_quantile, clip_lr, count_noise, self.expected, seed
            )
        self.noise = GaussianNoise(update_sigma, self.upload_stage.bound, seed)
        self.rounds = 0
        self.round_norms: list[float] = []  # the last round's uploads' norms before clipping (hosted here)
        self.budget_rounds = (
            None
            if target_epsilon is None
            else self.accountant.rounds_within(target_epsilon, planned_rounds or 0)
        )

    @property
    def clip(self) -> float:
        return self.upload_stage.bound.value

    @property
    def epsilon(self) -> float:
        """Epsilon spent by the rounds so far, at the accountant's delta."""
        return self.accountant.epsilon(self.rounds)

    def norm_figures(self) -> dict[str, float]:
        """The last round's uploads (those this process hosts) before clipping: their median L2
        norm and the fraction the clip cut; what to look at when choosing C (empty: none sent)."""
        norms = self.round_norms
        if not norms:
            return {}
        middle = len(norms) // 2
        median = norms[middle] if len(norms) % 2 else (norms[middle - 1] + norms[middle]) / 2
        return {"median_norm": median, "clipped_fraction": sum(n > self.clip for n in norms) / len(norms)}

    @property
    def budget_spent(self) -> bool:
        """Whether another round would spend more than ``target_epsilon``."""
        return self.budget_rounds is not None and self.rounds >= self.budget_rounds

    def average(self, total, numels: list[int], keeps, step: int) -> list[torch.Tensor]:
        """The round's noised average of the clipped uploads' sum ``total``; the round is counted."""
        self.rounds += 1
        self.round_norms = sorted(self.upload_stage.norms.values())
        self.upload_stage.norms.clear()
        average = self.noise.noised_average(total, numels, self.expected, keeps, step)
        if self.adaptive is not None:  # the next round's clip, from this round's bits
            count, _ = self.bits.server_sum()
            self.adaptive.update(None if count is None else float(count[0].reshape(-1)[0]), step)
        return average

    def send_clip_bit(self, device: int, step: int) -> None:
        """Adaptive clipping: ``device``'s bit (its update was within the clip) as a message of its own."""
        if self.adaptive is None:
            return
        within = float(self.upload_stage.norms[device] <= self.clip)
        payload = BIT_CODEC.encode([torch.tensor([within])], step=step, seed=0)
        self.bits.upload(Message(CLIP_BIT, device, step, payload, 1.0))

    def describe(self) -> str:
        """One line: the mechanism and what the planned run spends."""
        budget = "" if self.target_epsilon is None else f", budget epsilon {self.target_epsilon:g}"
        if self.adaptive is not None:
            budget += (
                f", clip adapted to quantile {self.adaptive.target_quantile:g} (count noise "
                f"{self.adaptive.count_noise:g}, update noise multiplier {self.noise.noise_multiplier:.4g})"
            )
        return (
            f"DP-FedAvg: clip {self.clip:g}, noise multiplier {self.noise_multiplier:.4g}"
            f"{' (calibrated)' if self.calibrated else ''}, delta {self.accountant.delta:g}, "
            f"{self.accountant.neighbours}, {self.accountant.kind} accountant{budget}"
        )

    def state_dict(self) -> dict:
        return {"rounds": self.rounds, "clip": self.clip, "noise_multiplier": self.noise_multiplier}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict`; a checkpoint noised with another sigma is refused."""
        if state:
            if state["noise_multiplier"] != self.noise_multiplier:
                raise ValueError(
                    f"the checkpoint was noised with noise multiplier {state['noise_multiplier']:.6g}, not "
                    f"{self.noise_multiplier:.6g}; resume with the options and planned rounds (--max-epochs, "
                    "--max-rounds) it was started with"
                )
            self.rounds = int(state["rounds"])
            self.upload_stage.bound.value = float(state["clip"])


def planned_rounds(trainer) -> int | None:
    """The rounds the run will take (one per training step), None if it has no end."""
    steps = trainer.estimated_stepping_batches
    return None if steps == float("inf") else int(steps)


def dp_fedavg_of(config, num_devices: int, seed: int, trainer, plan) -> DPFedAvg | None:
    """The run's :class:`DPFedAvg` from its ``config`` (None without ``dp_clip``), or a one-line error."""
    if config.dp_clip is None:
        return None
    check_public_mask(config, plan)
    planned = planned_rounds(trainer)
    if config.target_epsilon is not None and planned is None:
        raise ValueError(
            "target_epsilon needs a run with an end (max_epochs or max_steps) to plan its rounds"
        )
    if config.dp_delta >= 1 / num_devices:
        rank_zero_warn(
            f"dp_delta={config.dp_delta:g} is not below 1/N = {1 / num_devices:g}: a mechanism that "
            "releases one device's data whole would meet it; choose a delta well below 1/N"
        )
    privacy = DPFedAvg(
        config.dp_clip, config.dp_noise_multiplier, config.dp_delta, num_devices,
        config.devices_per_round or num_devices, config.sampling, seed, config.failure_rate,
        config.target_epsilon, planned, config.dp_accountant, config.dp_target_quantile, config.dp_clip_lr,
        config.dp_count_noise,
    )  # fmt: skip
    rank_zero_info(privacy.describe())
    return privacy


def stop_when_privacy_spent(privacy: DPFedAvg | None, trainer) -> None:
    """After a round: stop the run once another round would spend more than the budget."""
    if privacy is not None and privacy.budget_spent and not trainer.should_stop:
        trainer.should_stop = True
        rank_zero_info(
            f"DP-FedAvg: epsilon {privacy.epsilon:.4g} spent after {privacy.rounds} rounds, the most within "
            f"the budget of {privacy.target_epsilon:g}; stopping"
        )
