"""The federation's parts, built from its configuration when a fit starts.

:func:`assemble` gives a :class:`~lightning_fed.strategy.FederatedStrategy` everything a round
uses, in the order each needs the others: the algorithm (the paper's protocol or the FedAvg
family, unless one was given), the aggregation weights and the round schedule, the client and
server optimizers, the server's aggregation (privacy, a robust aggregator), the attack if one is
simulated, the devices' states this process holds (restored from a checkpoint being resumed) and the
transports that carry the messages and write the ledger.
"""

from lightning_fed.federation.attacks import attack_of
from lightning_fed.federation.client_sgd import ClientSGD
from lightning_fed.federation.device_state import DeviceStates
from lightning_fed.federation.fedavg import FedAvg
from lightning_fed.federation.hosting import device_rows_folder, device_weights, row_stage_names
from lightning_fed.federation.paper_protocol import PaperProtocol
from lightning_fed.federation.placement import resolve_placement
from lightning_fed.federation.rounds import RoundSchedule
from lightning_fed.federation.server_aggregation import checked_server_aggregation
from lightning_fed.federation.transport import make_transport
from lightning_fed.privacy.dp_fedavg import BIT_CODEC, dp_fedavg_of
from lightning_fed.secure.setup import secure_transport


def assemble(strategy, trainer) -> None:
    """Build ``strategy``'s federation for ``trainer``'s fit (its seed already set)."""
    config, num_devices = strategy.config, strategy._resolve_num_devices()
    if strategy._given_algorithm is None:
        strategy.algorithm = PaperProtocol() if strategy.synchronous else FedAvg()
    strategy.algorithm.setup(strategy)
    strategy.weights = device_weights(config.aggregation, num_devices, trainer.datamodule)
    sizes = getattr(trainer.datamodule, "device_sizes", None)
    weights = sizes() if config.sampling == "weighted" and sizes is not None else None
    strategy.schedule = RoundSchedule(
        num_devices, config.devices_per_round, config.sampling, config.failure_rate, strategy.seed, weights
    )
    set_up_optimizers(strategy)
    privacy = dp_fedavg_of(config, num_devices, strategy.seed, trainer, strategy.plan)
    strategy.server_aggregation = checked_server_aggregation(
        config, config.devices_per_round or num_devices, privacy
    )
    strategy.compression.set_clip(privacy.upload_stage if privacy is not None else None)
    strategy.attack = attack_of(config, num_devices, strategy.seed, strategy.world_size, trainer)
    strategy.compression.set_attack(strategy.attack)
    strategy.placement_of_run = resolve_placement(strategy)
    strategy.devices = DeviceStates(
        strategy.lightning_module, strategy.plan, strategy.held_devices, strategy.seed,
        strategy.client_optimizer,
        keep_optimizer_state=getattr(strategy.algorithm, "keeps_client_optimizer_state", False),
        rows_path=device_rows_folder(strategy, trainer), rank=strategy.global_rank,
        stage_names=row_stage_names(strategy),
    )  # fmt: skip
    strategy.restore_devices()
    numels = strategy.server_aggregation.numels = strategy.algorithm.upload_numels(strategy)
    strategy.transport_of_round = make_transport(
        config.transport, strategy.codec, numels, strategy.world_size, strategy.ledger,
        keep_updates=strategy.server_aggregation.needs_updates,
    )  # fmt: skip
    if config.secure_aggregation:
        strategy.transport_of_round = secure_transport(strategy, numels, num_devices)
    if privacy is not None and privacy.adaptive is not None:  # the clip bits travel on their own
        privacy.bits = make_transport(config.transport, BIT_CODEC, [1], strategy.world_size, strategy.ledger)


def set_up_optimizers(strategy) -> None:
    """The module's optimizer is the devices' (client) one, or SGD with ``client_lr``; the
    algorithm's server optimizer, if it has one, steps the shared parameters."""
    module_optimizer = strategy.client_optimizer = strategy.optimizers[0]
    if strategy.config.client_optimizer == "sgd":  # on the module's schedule, if it has one
        strategy.client_optimizer = ClientSGD(module_optimizer, strategy.config.client_lr)
    server = strategy.algorithm.server_optimizer(strategy, module_optimizer)
    if server is not None:
        strategy.optimizers = [server]
