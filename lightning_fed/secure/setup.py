"""A run's secure transport, made from its strategy once the round's size is known."""


def secure_transport(strategy, numels: list[int], num_devices: int):
    """The :class:`~lightning_fed.secure.transport.SecureTransport` of ``strategy``'s run: SecAgg+
    with k and t resolved for its rounds (``devices_per_round``, or N), words for as many devices
    as a round can hold (N under Poisson sampling); across processes, :class:`SecureCollective`."""
    from lightning_fed.secure.options import resolved_secagg, secagg_range
    from lightning_fed.secure.secagg import SecAggPlus
    from lightning_fed.secure.transport import SecureCollective, SecureTransport

    config = strategy.config
    per_round = config.devices_per_round or num_devices
    k, t = resolved_secagg(config, per_round)
    most = num_devices if config.sampling == "poisson" else per_round
    protocol = SecAggPlus(k, t, seed=strategy.seed)
    kind = SecureTransport if strategy.world_size == 1 else SecureCollective
    return kind(
        strategy.codec, numels, protocol, secagg_range(config), most, strategy.ledger,
        late_failure_rate=config.secagg_late_failure_rate, support=config.secagg_support,
    )  # fmt: skip
