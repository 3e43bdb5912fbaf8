"""The strategy's checkpoints: every device's state saved by the process that hosts it, the
federation's configuration saved whole, and a resume that would change the run refused.

The file layout (a checkpoint, each other process's states beside it, device rows hard-linked)
is :mod:`lightning_fed.federation.checkpoint`'s.
"""

from typing import Any

import torch
from pytorch_lightning.utilities import move_data_to_device

from lightning_fed.federation.checkpoint import (
    CHECKPOINT_KEY,
    files_of,
    read_sidecar,
    rows_path,
    sidecar_path,
)
from lightning_fed.federation.config import check_same_trajectory
from lightning_fed.federation.device_rows import remove_saved
from lightning_fed.federation.files import write_aside


class FederatedCheckpointing:
    """Save, load and remove the federation's checkpoints (a mixin of the strategy)."""

    _resumed: dict | None = None  # every device's state read from the checkpoint
    _resumed_initial: dict | None = None  # the saved run's initial local parameters (disk rows)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options=None) -> None:
        """Every process writes its step's files, then process 0 the checkpoint that names them, then
        each removes its files of older steps: killed at any moment, a checkpoint and all its files
        are there (module docstring of :mod:`lightning_fed.federation.checkpoint`)."""
        step = checkpoint.get("global_step")
        states = self.devices.state_dict(self.hosted_devices) if self.devices is not None else {}
        rows = self.devices.rows if self.devices is not None and self.devices.on_disk else None
        checkpoint[CHECKPOINT_KEY] = {
            "ledger": self.ledger.state_dict(),
            "num_devices": self.num_devices,
            "processes": self.world_size,
            "share_log_sigma2": self.config.share_log_sigma2,
            "transport": self.config.transport,
            "config": self.trajectory(),
            "devices": states if self.is_global_zero else None,
            "rows_layout": self.devices.layout if rows is not None else None,
            "initial_params": self.devices.initial if rows is not None else None,
            "files_step": step,
            "server_residual": self.compression.server_residual,
            "algorithm_state": self.algorithm.state_dict() if self.algorithm is not None else {},
            "server_aggregation": self.server_aggregation.state_dict() if self.server_aggregation else None,
        }
        written = []
        if rows is not None:
            written.append(rows_path(filepath, self.global_rank, step))
            written[-1].parent.mkdir(parents=True, exist_ok=True)
            rows.copy_to(written[-1])
        if not self.is_global_zero and states:
            written.append(sidecar_path(filepath, self.global_rank, step))
            side = {"global_step": step, "devices": states}
            write_aside(written[-1], lambda partial: torch.save(side, partial))
        self.barrier("federated checkpoint files")  # all of them exist before the checkpoint names them
        super().save_checkpoint(checkpoint, filepath, storage_options)
        self.barrier("federated checkpoint")
        for stale in set(files_of(filepath, self.global_rank)) - set(written):
            remove_saved(stale)

    def trajectory(self) -> dict:
        """What the run's trajectory depends on: the configuration, the algorithm and the seed."""
        return self.config.trajectory(self.num_devices, self.seed, getattr(self.algorithm, "name", None))

    def remove_checkpoint(self, filepath) -> None:
        super().remove_checkpoint(filepath)
        if self.is_global_zero:
            for rank in range(self.world_size):
                for path in files_of(filepath, rank):
                    remove_saved(path)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        federated = checkpoint.get(CHECKPOINT_KEY)
        if federated is None:
            return checkpoint
        if "devices" not in federated:
            raise ValueError(
                f"{checkpoint_path} was written before device states existed (lightning-fed < 0.2); "
                "it can start a run (--init-from) but not resume one"
            )
        self._check_same_federation(federated, checkpoint_path)
        self.ledger.load_state_dict(federated.get("ledger", {}))
        self.compression.server_residual = federated.get("server_residual")
        self._algorithm_state = federated.get("algorithm_state") or {"downlink": federated.get("downlink")}
        self._server_aggregation_state = federated.get("server_aggregation")
        pool = dict(federated.get("devices") or {})
        for rank in range(1, federated.get("processes", 1)):
            pool.update(read_sidecar(checkpoint, checkpoint_path, rank))
        self._resumed = pool  # the devices this process holds are known at set-up (its placement)
        self._resumed_from = (checkpoint_path, federated.get("files_step"), federated.get("rows_layout"))
        self._resumed_initial = federated.get("initial_params")  # where untrained devices start
        self._saved_trajectory = federated.get("config") or {}
        federated["devices"] = None  # the other devices' states are not kept
        return checkpoint

    def _check_same_federation(self, federated: dict, path) -> None:
        saved, now = federated.get("num_devices"), self._resolve_num_devices()
        if saved != now:
            raise ValueError(
                f"checkpoint {path} is of a {saved}-device federation; resume with --devices {saved}"
            )
        if federated.get("share_log_sigma2", False) != self.config.share_log_sigma2:
            flag = "with" if federated.get("share_log_sigma2") else "without"
            raise ValueError(
                f"checkpoint {path} was trained {flag} --share-log-sigma2; resume it the same way"
            )

    def restore_devices(self) -> None:
        """At set-up: the resumed checkpoint's device states and the algorithm's server state."""
        if self._resumed is None:
            return
        path, step, layout = self._resumed_from
        check_same_trajectory(self._saved_trajectory, self.trajectory(), path)
        rows_file = lambda rank: rows_path(path, rank, step)  # noqa: E731
        held = {d: self._resumed[d] for d in self.held_devices if d in self._resumed}
        self.devices.load_state_dict(
            held, rows_file=rows_file, rows_layout=layout, initial=self._resumed_initial
        )
        # the checkpoint was read onto the CPU; the server's tensors live with the model (a GPU's)
        here = self.root_device
        self.compression.server_residual = move_data_to_device(self.compression.server_residual, here)
        self.algorithm.load_state_dict(move_data_to_device(self._algorithm_state, here))
        self.server_aggregation.load_state_dict(self._server_aggregation_state)
        self._resumed = None
