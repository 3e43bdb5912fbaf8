"""``RobustnessMonitor``: each round's figures of the server's robust aggregation, to every logger.

Under ``FederatedStrategy`` with a robust aggregator or the mask check
(``lightning_fed.federation.server_aggregation``) it logs, after every round,
``robust/rejected_values`` (values the mask check zeroed, sent outside the public ``M(alpha)``),
``robust/chosen`` (how many updates Krum, Multi-Krum or Bulyan's selection kept; 0 for the other
rules) and, when devices attack, ``robust/chosen_attackers`` (how many of those were attackers').
Under any other strategy it does nothing.
"""

import pytorch_lightning as pl


class RobustnessMonitor(pl.Callback):
    """Log the server aggregation's figures after each round.

    Example::

        >>> RobustnessMonitor().figures(None)
        {}
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ):
        for name, value in self.figures(trainer.strategy).items():
            pl_module.log(f"robust/{name}", float(value), on_step=True, on_epoch=False)

    @staticmethod
    def figures(strategy) -> dict[str, int]:
        """The last round's figures of ``strategy``'s server aggregation (empty without one)."""
        aggregation = getattr(strategy, "server_aggregation", None)
        if aggregation is None or not aggregation.needs_updates:
            return {}
        figures = {"rejected_values": aggregation.rejected_values, "chosen": len(aggregation.chosen)}
        attack = getattr(strategy, "attack", None)
        if attack is not None:
            figures["chosen_attackers"] = sum(d in attack.malicious for d in aggregation.chosen)
        return figures
