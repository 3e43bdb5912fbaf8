"""``PrivacyMonitor``: the privacy budget spent so far, to every logger and the progress bar.

Under ``FederatedStrategy`` with client-level DP (``lightning_fed.privacy``) it logs
``privacy/epsilon`` (at the run's delta, from the accountant) every ``logging_interval`` rounds, at
each epoch's last round and after the run's last one, ``privacy/rounds``, and that round's
``privacy/median_norm`` and ``privacy/clipped_fraction`` (the uploads' L2 norms before clipping,
of the devices process 0 hosts: what to look at when choosing the clip). Under any other strategy
it does nothing. The accountant takes a fraction of a second per figure, which is why it is not
asked every round.
"""

import pytorch_lightning as pl


class PrivacyMonitor(pl.Callback):
    """Log epsilon spent every ``logging_interval`` rounds.

    Example::

        >>> PrivacyMonitor(logging_interval=50).figures(None)
        {}
    """

    def __init__(self, logging_interval: int = 50) -> None:
        if (
            isinstance(logging_interval, bool)
            or not isinstance(logging_interval, int)
            or logging_interval < 1
        ):
            raise ValueError(f"logging_interval must be an integer >= 1, got {logging_interval!r}")
        self.logging_interval = logging_interval

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ):
        last = trainer.should_stop or trainer.global_step >= trainer.estimated_stepping_batches
        last = last or batch_idx == trainer.num_training_batches - 1
        if trainer.global_step % self.logging_interval and not last:
            return
        for name, value in self.figures(trainer.strategy).items():
            pl_module.log(
                f"privacy/{name}", float(value), on_step=True, on_epoch=False, prog_bar=name == "epsilon"
            )

    @staticmethod
    def figures(strategy) -> dict[str, float]:
        """Epsilon spent and rounds run under ``strategy``'s DP (empty without it)."""
        privacy = getattr(getattr(strategy, "server_aggregation", None), "privacy", None)
        if privacy is None:
            return {}
        return {"epsilon": privacy.epsilon, "rounds": privacy.rounds, **privacy.norm_figures()}
