"""``SparsityMonitor``: log the kept fraction of weights, per layer and in total."""

import pytorch_lightning as pl
import torch
from typing_extensions import override


@torch.no_grad()
def kept_weights(module: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """``{layer: (kept, total)}`` for every layer with a weight: the keep-mask of variational
    layers (anything with ``keep_mask()``), exact non-zeros for any other layer."""
    report = {}
    for name, layer in module.named_modules():
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or weight.dim() < 2:
            continue
        mask = layer.keep_mask() if callable(getattr(layer, "keep_mask", None)) else weight != 0
        report[name] = (int(mask.sum()), mask.numel())
    return report


class SparsityMonitor(pl.Callback):
    """Logs ``sparsity/<layer>`` and ``sparsity/total`` (kept fraction) once per training epoch,
    and optionally histograms of log_alpha where the logger is W&B. ``history`` keeps one row per
    epoch (saved in checkpoints), for plots of the kept fraction per layer.

    Example::

        >>> kept_weights(torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False)).requires_grad_(False))["0"][1]
        4
    """

    def __init__(self, log_histograms: bool = False) -> None:
        if not isinstance(log_histograms, bool):
            raise ValueError(f"log_histograms must be True or False, got {log_histograms!r}")
        self.log_histograms = log_histograms
        self.history: list[dict] = []

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # At the epoch's last batch rather than at epoch end: an end-of-validation checkpoint,
        # which comes before on_train_epoch_end, then already holds this epoch's row.
        if not (trainer.is_last_batch or batch_idx + 1 >= trainer.num_training_batches):
            return
        report = kept_weights(pl_module)
        kept, total = sum(k for k, _ in report.values()), sum(t for _, t in report.values())
        metrics = {f"sparsity/{name}": k / t for name, (k, t) in report.items()}
        metrics["sparsity/total"] = kept / total if total else 1.0
        # once per epoch, of the model: batch_size=1 (a federated round's batch has no one size)
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, rank_zero_only=True, batch_size=1)
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        if self.log_histograms and trainer.is_global_zero:
            self._histograms(trainer, pl_module)

    @override
    def state_dict(self) -> dict:
        return {"history": [dict(row) for row in self.history]}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(row) for row in state_dict.get("history", [])]

    @staticmethod
    def _histograms(trainer, pl_module) -> None:
        from pytorch_lightning.loggers import WandbLogger

        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            import wandb  # only with a W&B logger: a run without one needs no wandb package

            histograms = {
                f"log_alpha/{name}": wandb.Histogram(layer.log_alpha.detach().cpu().numpy().ravel())
                for name, layer in pl_module.named_modules()
                if hasattr(layer, "log_alpha")
            }
            logger.experiment.log({**histograms, "trainer/global_step": trainer.global_step})
