"""``FederatedEvaluation``: after each validation and test, the accuracy of the models E devices run.

Under ``FederatedStrategy`` each device runs the shared parameters with its own local state (its
log_sigma2 in the paper's variant); the validation and test metrics are device 0's model. This
callback evaluates E devices drawn by a seeded draw each epoch, each on the whole validation (or
test) set, and logs their mean, spread and worst (``val/device_acc_mean``, ``val/device_acc_std``,
``val/device_acc_min``; ``test/...`` the same) to every logger. Under a strategy without devices
it does nothing.
"""

import statistics

import pytorch_lightning as pl


class FederatedEvaluation(pl.Callback):
    """Evaluate ``num_devices`` devices after each validation (seeded by ``seed`` and the epoch).

    Example::

        >>> FederatedEvaluation(num_devices=10).num_devices
        10
    """

    def __init__(self, num_devices: int, seed: int = 0) -> None:
        if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
            raise ValueError(f"num_devices must be an integer >= 1, got {num_devices!r}")
        self.num_devices, self.seed = num_devices, seed
        self.last: dict[str, dict[int, float]] = {}  # per stage (val, test): each device's accuracy
        self.epoch = 0

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._evaluate(trainer, pl_module, "val", trainer.val_dataloaders)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluate(trainer, pl_module, "test", trainer.test_dataloaders)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, loaders) -> None:
        strategy = trainer.strategy
        if getattr(strategy, "devices", None) is None:
            return
        from lightning_fed.federation.evaluation import devices_to_evaluate, evaluate_devices

        self.epoch = trainer.current_epoch
        chosen = devices_to_evaluate(strategy.num_devices, self.num_devices, self.seed, self.epoch)
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        self.last[stage] = evaluate_devices(strategy, chosen, loader)
        for name, value in _figures(self.last[stage]).items():
            pl_module.log(f"{stage}/{name}", value, sync_dist=False)

    def summary(self) -> dict:
        """The last evaluation (the test's if there was one, else the validation's), for a run's
        summary: the devices, their accuracies' mean, spread and minimum."""
        last = self.last.get("test") or self.last.get("val")
        if not last:
            return {}
        return {**_figures(last), "devices_evaluated": sorted(last)}


def _figures(accuracy: dict[int, float]) -> dict[str, float]:
    values = list(accuracy.values())
    return {
        "device_acc_mean": statistics.fmean(values),
        "device_acc_std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "device_acc_min": min(values),
    }
