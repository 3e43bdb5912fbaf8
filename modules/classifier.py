"""``SparseVDClassifier``: the ELBO of sparse variational dropout and the alpha-thresholded masking."""

import functools
import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_fed.nn import GradientMasker, kl_divergence, sparsity, variational
from lightning_fed.nn.init_from import init_from as load_theta
from lightning_fed.nn.layers import DEFAULT_INIT_LOG_SIGMA2, DEFAULT_THRESHOLD, check_threshold
from modules.networks import build_network
from modules.round_average import RoundAverage

LR_SCHEDULES = ("constant", "cosine")


def cosine_factor(epoch: int, epochs: int, min_ratio: float) -> float:
    """Learning-rate multiplier of epoch ``epoch`` of ``epochs``: 1 at the start, ``min_ratio`` at the last.

    Example::

        >>> [round(cosine_factor(e, epochs=3, min_ratio=0.0), 2) for e in range(3)]
        [1.0, 0.5, 0.0]
    """
    progress = min(epoch / max(epochs - 1, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_positive(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")


class SparseVDClassifier(pl.LightningModule):
    """Classifier trained on the ELBO ``NLL_mean + kl_weight * KL / num_train``.

    Every step, before backward, the masks ``M(alpha) = log_alpha < threshold`` are taken from
    the current log_alpha; tensor hooks multiply each theta gradient by its mask. Under
    ``FederatedStrategy`` what a device sends is masked by the strategy's ``SharingPlan`` as well,
    so a deep copy of the module (whose tensor hooks are gone) still sends masked gradients.

    Args:
        network: an ``nn.Module`` or the name of one in :mod:`modules.networks`.
        num_train: size of the *whole* federated training set (all devices together).
        num_classes, in_channels, image_size: used when ``network`` is a name.
        kl_weight: weight of the KL term; a plain attribute that callbacks (``KLWarmup``) change.
        threshold: log_alpha threshold T of the mask and of evaluation.
        lr: Adam learning rate.
        log_sigma2_lr: learning rate of log_sigma2 (default: ``lr``).
        dense: keep the network dense (the paper's baseline): plain NLL, nothing masked.
        init_log_sigma2: initial log_sigma2 of every weight.
        mask_gradients: multiply theta gradients by ``M(alpha)`` (off only for experiments).
        mask_log_sigma2: mask the log_sigma2 gradients too (Algorithm 1 proper).
        init_from: path or state dict to start theta from (same network, dense or variational).
        pretrained: ImageNet weights for ``resnet18`` (needs internet).
        lr_schedule: ``"constant"`` (the paper) or ``"cosine"``: every learning rate decays per
            epoch along a half cosine to ``min_lr_ratio`` times its start over ``max_epochs``.
        min_lr_ratio: the cosine schedule's last learning rate as a fraction of the first.
        recurrent_noise: what one draw of a variational LSTM's weights serves in training,
            ``"batch"`` (the default) or ``"sequence"`` (Lobacheva et al.); for the character
            networks given by name (:mod:`lightning_fed.nn.recurrent`).

    Example::

        >>> model = SparseVDClassifier("lenet300_100", num_train=60000)
        >>> model.kl_weight, model.threshold
        (1.0, 3.0)
    """

    def __init__(
        self,
        network: nn.Module | str = "cifarnet",
        num_train: int = 60000,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        kl_weight: float = 1.0,
        threshold: float = DEFAULT_THRESHOLD,
        lr: float = 1e-3,
        log_sigma2_lr: float | None = None,
        dense: bool = False,
        init_log_sigma2: float = DEFAULT_INIT_LOG_SIGMA2,
        mask_gradients: bool = True,
        mask_log_sigma2: bool = False,
        init_from=None,
        pretrained: bool = False,
        lr_schedule: str = "constant",
        min_lr_ratio: float = 0.01,
        recurrent_noise: str = "batch",
    ) -> None:
        super().__init__()
        if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train <= 0:
            raise ValueError(f"num_train must be a positive integer (training-set size), got {num_train!r}")
        check_threshold(threshold)
        _check_positive("lr", lr)
        _check_positive("kl_weight", kl_weight, allow_zero=True)
        if log_sigma2_lr is not None:
            _check_positive("log_sigma2_lr", log_sigma2_lr)
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
        _check_positive("min_lr_ratio", min_lr_ratio, allow_zero=True)
        if min_lr_ratio > 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
        self.save_hyperparameters(
            ignore=["network", "init_from"] if isinstance(network, nn.Module) else ["init_from"]
        )
        if isinstance(network, str):
            network = build_network(
                network, in_channels, image_size, num_classes, pretrained=pretrained,
                recurrent_noise=recurrent_noise,
            )  # fmt: skip
        elif recurrent_noise != "batch":
            raise ValueError("recurrent_noise applies to a network given by name; set noise= on your LSTM")
        if init_from is not None and dense:
            load_theta(network, init_from)
        self.network = network if dense else variational(network, threshold, init_log_sigma2)
        if init_from is not None and not dense:
            load_theta(self.network, init_from)
        self.num_train = num_train
        names = ["train/nll", "train/kl", "train/loss"] + ([] if dense else ["sparsity/kept_fraction"])
        self._round_average = RoundAverage(names)
        self.kl_weight = float(kl_weight)
        self.threshold = float(threshold)
        self.lr = lr
        self.log_sigma2_lr = log_sigma2_lr or lr
        self.dense = dense
        self.lr_schedule = lr_schedule
        self.min_lr_ratio = float(min_lr_ratio)
        self.masker = GradientMasker(self.network, mask_log_sigma2=mask_log_sigma2, enabled=mask_gradients)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    @property
    def gradient_masks(self) -> dict[str, torch.Tensor]:
        """The masks ``M(alpha)`` of the current step, ``{layer name: bool tensor}``."""
        return self.masker.masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def elbo_terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``nll`` (mean over the batch), ``kl`` (sum over weights) and ``loss`` (the negative ELBO)."""
        nll = F.cross_entropy(logits, target)
        kl = kl_divergence(self.network).to(nll)
        return {"nll": nll, "kl": kl, "loss": nll + self.kl_weight * kl / self.num_train}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.masker.refresh()  # the masks of this step, from the computing device's log_alpha
        x, y = batch
        terms = self.elbo_terms(self(x), y)
        figures = {f"train/{k}": v for k, v in terms.items()}
        if not self.dense:
            figures["sparsity/kept_fraction"] = torch.tensor(self.masker.kept() / self._theta_count())
        strategy = getattr(self._trainer, "strategy", None)
        hosting = getattr(getattr(strategy, "devices", None), "current", None)  # None: not federated
        self._round_average.add(hosting, figures)
        return terms["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Logged once per step of the Trainer (a round under FederatedStrategy, in which every
        # device takes one or more local steps): the mean over the round's devices, every process's.
        figures = self._round_average.mean(self.trainer.strategy, self.device)
        if figures is None:  # every sampled device failed
            return
        kept = figures.pop("sparsity/kept_fraction", None)
        self.log_dict({name: value.float() for name, value in figures.items()}, prog_bar=False)
        self.log("train/kl_weight", self.kl_weight)
        if kept is not None:
            self.log("sparsity/kept_fraction", kept.float(), prog_bar=True)

    def _theta_count(self) -> int:
        return sum(mask.numel() for mask in self.masker.masks.values()) or 1

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.val_acc(self(x), y)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test/acc", self.test_acc)

    def kept_fraction(self) -> float:
        """Fraction of theta kept by the masks (1.0 for a dense network)."""
        return sparsity(self.network)["total"].fraction if not self.dense else 1.0

    def configure_optimizers(self):
        log_sigma2 = [p for n, p in self.network.named_parameters() if n.endswith("log_sigma2")]
        others = [p for n, p in self.network.named_parameters() if not n.endswith("log_sigma2")]
        groups = [{"params": others, "lr": self.lr}]
        if log_sigma2:
            groups.append({"params": log_sigma2, "lr": self.log_sigma2_lr})
        optimizer = torch.optim.Adam(groups)
        if self.lr_schedule == "constant":
            return optimizer
        epochs = max(self.trainer.max_epochs or 1, 1)
        factor = functools.partial(cosine_factor, epochs=epochs, min_ratio=self.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
