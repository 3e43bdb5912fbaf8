"""``FederationConfig``: every option that changes a federation's trajectory, validated once.

The strategy builds its algorithm from it, and the checkpoint stores it whole, so a resume that
would change the run is refused in one line naming the option and its saved value
(:meth:`FederationConfig.check_resume`). Options that cannot change the trajectory (where device
states are kept, process placement, logging) are not part of it.

Example::

    >>> config = FederationConfig(devices_per_round=50, local_epochs=1)
    >>> config.synchronous(num_devices=1000), config.sends_deltas
    (False, True)
    >>> FederationConfig(sampling="random")
    Traceback (most recent call last):
    ...
    ValueError: sampling must be one of uniform, weighted, poisson, got 'random'
"""

import math
import numbers
from dataclasses import dataclass, fields

from lightning_fed.communication import Codec
from lightning_fed.federation.aggregators import Aggregator, Bulyan, Krum, make_aggregator
from lightning_fed.federation.attacks import make_attack
from lightning_fed.federation.downlink import DOWNLOADS
from lightning_fed.federation.rounds import SAMPLINGS, check_failure_rate
from lightning_fed.federation.server_optimizers import SERVER_OPTIMIZERS
from lightning_fed.federation.stages import Stage
from lightning_fed.federation.transport import TRANSPORTS
from lightning_fed.privacy.options import check_privacy
from lightning_fed.secure.options import check_secure_aggregation

AGGREGATIONS = ("mean", "weighted")
CLIENT_OPTIMIZERS = ("module", "sgd")


def _checked_stages(name: str, stages) -> tuple:
    """``stages`` as a tuple of :class:`~lightning_fed.federation.stages.Stage`, or a one-line error."""
    stages = () if stages is None else stages
    if isinstance(stages, Stage):
        stages = (stages,)
    if not isinstance(stages, (list, tuple)) or not all(isinstance(s, Stage) for s in stages):
        raise ValueError(
            f"{name} must be a list of lightning_fed.federation.stages.Stage objects, got {stages!r}"
        )
    return tuple(stages)


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _check_count(name: str, value) -> None:
    if value is not None and (
        not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1
    ):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_positive(name: str, value) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < math.inf
    if value is not None and not ok:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class FederationConfig:
    """The federation's trajectory options (``FederatedStrategy``'s arguments of the same names).

    Args:
        num_devices: N; by default the datamodule's ``num_devices``, else the number of processes.
        transport: ``"dense"`` or ``"sparse"`` (how messages cross processes; same model).
        share_log_sigma2: Algorithm 1 proper: log_sigma2 is shared (and masked) too.
        codec: the uploads' :class:`~lightning_fed.communication.Codec`, or a spec for
            :func:`~lightning_fed.communication.make_codec` (``"topk:0.01+qsgd:8"``, a list of
            stages); by default lossless float32 values at the cheapest positions.
        download_codec: the server's messages' codec. By default, in the paper's protocol,
            ``codec``'s value coder without its filters (the average of top-k uploads goes back as
            sparse as their union); in sampled rounds, whose download is the model itself, lossless.
        error_feedback: each device keeps what the upload codec dropped and adds it to its next
            upload (:mod:`lightning_fed.federation.error_feedback`); needs a lossy codec.
        error_feedback_momentum: DGC's momentum correction: each device accumulates its own
            momentum of the updates with this factor, and clears it where it sent (0: off; pair it
            with ``server_optimizer="fedavg"``, as the momentum is then on the devices).
        download_error_feedback: the server does the same for its download (the paper's protocol,
            and ``download="delta"`` with every device in every round; in sampled rounds the
            download is the model itself, or under ``"delta"`` the change from each device's copy).
        download: in FedAvg-family rounds, ``"model"`` (the model itself), ``"delta"`` (its
            change since the copy a device holds, zero where no update moved a weight: one message
            when every device takes part in every round, each sampled device its own otherwise, its
            copy kept in its row) or ``"sparse"`` (the kept weights of the public ``M(alpha)`` with their
            positions; needs ``share_log_sigma2``; :mod:`lightning_fed.federation.downlink`).
        aggregation: ``"mean"`` (the paper: over N) or ``"weighted"`` (by the datamodule's shard sizes).
        mask: mask theta by ``M(alpha)`` before it is sent.
        devices_per_round: K, the devices sampled per round (default: all N).
        sampling: ``"uniform"`` (exactly K), ``"poisson"`` (each device in with probability K / N)
            or ``"weighted"``: each device included with probability proportional to its shard
            size (systematic sampling of exactly K; goes with ``aggregation="mean"``,
            :class:`~lightning_fed.federation.rounds.RoundSchedule`).
        local_steps: H, a sampled device's local steps per round (1: it sends its gradient).
        local_epochs: instead of H, passes over its own shard (its last batch may be short).
        failure_rate: chance that a sampled device fails to report (it sent nothing).
        server_optimizer: one of ``fedavg``, ``fedavgm``, ``fedadam``, ``fedyogi``, ``fedadagrad``.
        server_lr: its learning rate (default 1 for fedavg/fedavgm, 0.01 for the adaptive ones).
        server_momentum: fedavgm's momentum.
        client_optimizer: ``"module"`` (the LightningModule's, fresh each round) or ``"sgd"``.
        client_lr: the client SGD's learning rate (default: the module's).
        proximal_mu: FedProx's ``mu``: each local step adds ``mu * (w - w_round_start)``.
        upload_stages: :class:`~lightning_fed.federation.stages.Stage` objects every upload goes
            through after the built-in ones (masking, error feedback), just before the codec.
        download_stages: the same for the server's messages. A checkpoint records both by their
            ``repr`` (a stage with parameters shows them there).
        aggregator: the server's rule for a round's updates
            (:mod:`lightning_fed.federation.aggregators`): ``"mean"`` (default), ``"median"``,
            ``"trimmed_mean:BETA"``, ``"krum:F"``, ``"multi_krum:F:M"``, ``"bulyan:F"``,
            ``"norm_bound:BOUND"``, ``"centered_clip:TAU[:ITERATIONS]"``, or an ``Aggregator``.
        enforce_mask: under Algorithm 1, the server zeroes and counts every uploaded value outside
            the public ``M(alpha)`` (:mod:`lightning_fed.federation.server_aggregation`).
        attack: what the attackers send (:mod:`lightning_fed.federation.attacks`): ``"sign_flip"``,
            ``"scale:BOOST"``, ``"gaussian:SIGMA"``, ``"label_flip"``, ``"alie[:Z]"``, ``"ipm[:EPS]"``.
        malicious_fraction: the fraction of the devices that attack, drawn from the seed.
        worker_momentum: each device sends its own momentum ``m = beta m + (1 - beta) u`` of its
            updates, ``beta`` this factor (Karimireddy et al. 2021's partner of centered clipping,
            :mod:`lightning_fed.federation.worker_momentum`; 0: off).
        dp_clip: client-level differential privacy (DP-FedAvg, :mod:`lightning_fed.privacy`): every
            message clipped to this L2 norm C, the server's sum noised (None: no DP).
        dp_noise_multiplier: sigma, the noise's standard deviation over C (None: calibrated from
            ``target_epsilon`` for the run's planned rounds).
        target_epsilon: the privacy budget; the run stops at the last round within it.
        dp_delta: the guarantee's delta (default 1e-5).
        dp_accountant: ``"pld"`` or ``"rdp"`` (None: pld, or rdp under sampling exactly K of N).
        dp_target_quantile: adaptive clipping (:mod:`lightning_fed.privacy.adaptive_clip`): the
            quantile of the update norms the clip follows, ``dp_clip`` its start (None: fixed).
        dp_clip_lr: adaptive clipping's learning rate eta (default 0.2).
        dp_count_noise: the noise sigma_b on the clip count (None: the expected count over 20).
        secure_aggregation: sum each round's uploads with SecAgg+ (:mod:`lightning_fed.secure`):
            the server learns the sum, no single upload.
        secagg_neighbours: K, the devices each one masks with and shares its secrets among (None:
            2 ceil(log2 of a round's devices); at least the round's devices - 1: classic SecAgg).
        secagg_threshold: T of K shares rebuild a secret, K / 2 < T <= K (None: K // 2 + 1).
        secagg_range: uploads are clipped to [-range, range] as 32-bit fixed point (None:
            ``dp_clip``, else 1).
        secagg_late_failure_rate: the chance that a device that sent its masked upload falls
            silent before the unmasking (its input counts; its shares of others are missing).
        secagg_support: where no public mask says which coordinates are summed (the paper's
            variant, dense runs): ``dense``, every one, or ``union``, those any reporting device
            kept, learned first by a secure sum of packed counts (:mod:`lightning_fed.secure.support`).
    """

    num_devices: int | None = None
    transport: str = "dense"
    share_log_sigma2: bool = False
    codec: "Codec | str | list | None" = None
    download_codec: "Codec | str | list | None" = None
    error_feedback: bool = False
    error_feedback_momentum: float = 0.0
    download_error_feedback: bool = False
    download: str = "model"
    aggregation: str = "mean"
    mask: bool = True
    devices_per_round: int | None = None
    sampling: str = "uniform"
    local_steps: int = 1
    local_epochs: int | None = None
    failure_rate: float = 0.0
    server_optimizer: str | None = None
    server_lr: float | None = None
    server_momentum: float = 0.9
    client_optimizer: str = "module"
    client_lr: float | None = None
    proximal_mu: float = 0.0
    upload_stages: tuple = ()
    download_stages: tuple = ()
    aggregator: "str | Aggregator | None" = None
    enforce_mask: bool = False
    attack: str | None = None
    malicious_fraction: float = 0.0
    worker_momentum: float = 0.0
    dp_clip: float | None = None
    dp_noise_multiplier: float | None = None
    target_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_accountant: str | None = None
    dp_target_quantile: float | None = None
    dp_clip_lr: float = 0.2
    dp_count_noise: float | None = None
    secure_aggregation: bool = False
    secagg_neighbours: int | None = None
    secagg_threshold: int | None = None
    secagg_range: float | None = None
    secagg_late_failure_rate: float = 0.0
    secagg_support: str = "dense"

    def __post_init__(self) -> None:
        for name in ("upload_stages", "download_stages"):
            object.__setattr__(self, name, _checked_stages(name, getattr(self, name)))
        self._check_robustness()
        check_privacy(self)
        check_secure_aggregation(self)
        _check_choice("transport", self.transport, TRANSPORTS)
        _check_choice("aggregation", self.aggregation, AGGREGATIONS)
        _check_choice("download", self.download, DOWNLOADS)
        for name in ("num_devices", "devices_per_round", "local_epochs", "local_steps"):
            _check_count(name, getattr(self, name))
        if self.num_devices is not None and (self.devices_per_round or 0) > self.num_devices:
            raise ValueError(
                f"devices_per_round={self.devices_per_round} exceeds num_devices={self.num_devices}"
            )
        if self.local_epochs is not None and self.local_steps != 1:
            raise ValueError("give local_steps or local_epochs, not both")
        _check_choice("sampling", self.sampling, SAMPLINGS)
        if self.sampling == "weighted" and self.aggregation == "weighted":
            raise ValueError(
                "sampling='weighted' with aggregation='weighted' counts large shards twice (drawn more "
                "often, then weighed more); use aggregation='mean': the plain mean of a size-proportional "
                "sample is already unbiased for the shard-size weighted average"
            )
        if self.server_optimizer is not None:
            _check_choice("server_optimizer", self.server_optimizer, SERVER_OPTIMIZERS)
        _check_choice("client_optimizer", self.client_optimizer, CLIENT_OPTIMIZERS)
        _check_positive("server_lr", self.server_lr)
        _check_positive("client_lr", self.client_lr)
        mu = self.proximal_mu
        if not (isinstance(mu, numbers.Real) and not isinstance(mu, bool) and 0 <= mu < math.inf):
            raise ValueError(f"proximal_mu must be a finite number >= 0, got {mu!r}")
        if not (isinstance(self.server_momentum, numbers.Real) and 0 <= self.server_momentum < 1):
            raise ValueError(f"server_momentum must be in [0, 1), got {self.server_momentum!r}")
        object.__setattr__(self, "failure_rate", check_failure_rate(self.failure_rate))
        object.__setattr__(self, "proximal_mu", float(mu))

    def _check_robustness(self) -> None:
        """The aggregator, the mask check and the attack, alone and together, or a one-line error."""
        aggregator = make_aggregator(self.aggregator)
        robust = aggregator.needs_updates
        if robust and self.aggregation == "weighted":
            raise ValueError(
                f"aggregator={self.aggregator!r} weighs every update alike; use aggregation='mean'"
            )
        if self.failure_rate and isinstance(aggregator, (Krum, Bulyan)):
            raise ValueError(
                f"aggregator={self.aggregator!r} assumes the same number of updates every round; "
                "it does not go with failure_rate > 0"
            )
        if self.enforce_mask and not (self.share_log_sigma2 and self.mask):
            raise ValueError(
                "enforce_mask needs share_log_sigma2 and the mask (Algorithm 1: M(alpha) is then public); "
                "under the paper's variant each device's mask is private"
            )
        fraction = self.malicious_fraction
        if not (isinstance(fraction, numbers.Real) and not isinstance(fraction, bool) and 0 <= fraction < 1):
            raise ValueError(f"malicious_fraction must be in [0, 1), got {fraction!r}")
        if self.attack is not None:
            make_attack(self.attack, [])
            if not fraction:
                raise ValueError(
                    f"attack={self.attack!r} needs malicious_fraction > 0 (the attackers' share)"
                )
        elif fraction:
            raise ValueError(f"malicious_fraction={fraction!r} needs an attack (what the attackers send)")
        beta = self.worker_momentum
        if not (isinstance(beta, numbers.Real) and not isinstance(beta, bool) and 0 <= beta < 1):
            raise ValueError(f"worker_momentum must be in [0, 1), got {beta!r}")

    @property
    def sends_deltas(self) -> bool:
        """Devices train several local steps and send model deltas (else one step, its gradient)."""
        return self.local_steps > 1 or self.local_epochs is not None

    def every_device(self, num_devices: int | None = None) -> bool | None:
        """Every device takes part in every round (None: the device count is not known yet)."""
        num_devices = num_devices or self.num_devices
        if self.devices_per_round is None:
            return True
        return None if num_devices is None else self.devices_per_round == num_devices

    def synchronous(self, num_devices: int | None = None) -> bool:
        """The paper's protocol: every device, every round, one step, nobody failing."""
        return bool(self.every_device(num_devices)) and not self.sends_deltas and self.failure_rate == 0

    def trajectory(self, num_devices: int, seed: int, algorithm: str | None = None) -> dict:
        """What a checkpoint stores: every option as plain values (codecs as their specs), with the
        device count and seed the run resolved, and the algorithm's name (by default the built-in
        one these options choose)."""
        saved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("codec", "download_codec"):
            if saved[name] is not None and not isinstance(saved[name], str):
                saved[name] = repr(saved[name])
        for name in ("upload_stages", "download_stages"):
            saved[name] = [repr(stage) for stage in saved[name]]
        saved["aggregator"] = repr(make_aggregator(self.aggregator))
        algorithm = algorithm or ("paper" if self.synchronous(num_devices) else "fedavg")
        return {**saved, "num_devices": num_devices, "seed": seed, "algorithm": algorithm}

    def check_resume(self, saved: dict, now: dict, path) -> None:
        """Refuse a resume whose :meth:`trajectory` differs from the checkpoint's, naming the first
        option that changed and its saved value. Options a checkpoint predates are not compared.

        Example::

            >>> config = FederationConfig(local_steps=2)
            >>> saved = config.trajectory(num_devices=8, seed=0)
            >>> config.check_resume(saved, config.trajectory(num_devices=8, seed=0), "last.ckpt")
            >>> try:
            ...     config.check_resume(saved, config.trajectory(num_devices=8, seed=1), "last.ckpt")
            ... except ValueError as error:
            ...     print(str(error).split("; ")[0])
            checkpoint last.ckpt was trained with --seed 0, not 1
        """
        check_same_trajectory(saved, now, path)


def check_same_trajectory(saved: dict, now: dict, path) -> None:
    """:meth:`FederationConfig.check_resume`, for trajectories already written out."""
    for name, value in now.items():
        if name in saved and saved[name] != value:
            raise ValueError(
                f"checkpoint {path} was trained {_as_flag(name, saved[name], value)}; "
                "resume it with the options it was trained with"
            )


def _as_flag(name: str, saved, now) -> str:
    """How fit.py's flags say that option ``name`` was ``saved`` and is now ``now``."""
    if name == "download":  # fit.py's --download-delta and --download-sparse
        if "model" in (saved, now):
            other = now if saved == "model" else saved
            return f"{'without' if saved == 'model' else 'with'} --download-{other}"
        return f"with --download-{saved}, not --download-{now}"
    if name in ("upload_stages", "download_stages"):  # FederatedStrategy's, no fit.py flag
        return f"with {name} [{', '.join(saved)}], not [{', '.join(now)}]"
    flag = "--devices" if name == "num_devices" else "--" + name.replace("_", "-")
    if isinstance(saved, bool) and isinstance(now, bool):
        return f"with {flag}" if saved else f"without {flag}"
    return f"with {flag} {_shown(saved)}, not {_shown(now)}"


def _shown(value) -> str:
    return "(none)" if value is None else str(value)
