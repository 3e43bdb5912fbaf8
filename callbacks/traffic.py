"""Where the callbacks read communication from: a strategy's ledger, or the dense traffic implied."""

import pytorch_lightning as pl


def ledger_of(trainer: pl.Trainer):
    """The strategy's communication ledger (``FederatedStrategy.ledger``), or None."""
    return getattr(trainer.strategy, "ledger", None)


def dense_step_bytes(pl_module: pl.LightningModule, num_devices: int) -> int:
    """Bytes dense distributed SGD moves per step: upload and download of every trainable float32
    parameter (log_sigma2, which never travels in the paper's variant, excluded).

    Example::

        >>> import torch
        >>> module = pl.LightningModule()
        >>> module.layer = torch.nn.Linear(3, 2)
        >>> dense_step_bytes(module, num_devices=4)  # 2 x 4 devices x 8 parameters x 4 bytes
        256
    """
    params = sum(
        p.numel() for n, p in pl_module.named_parameters() if p.requires_grad and "log_sigma2" not in n
    )
    return 2 * num_devices * params * 4
