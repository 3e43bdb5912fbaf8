"""The paper's synchronous protocol: every device, every round, one step, the average sent back.

Each device computes the gradients of its ELBO on its next batch, steps what never leaves it
(its local log_sigma2 in the variant), and uploads its shared gradients masked by ``M(alpha)``.
The server averages the decoded uploads, encodes the average as the download, and every device
steps the shared parameters with what it decodes (the module's optimizer, Adam in the paper; a
``server_optimizer`` if one was given). With ``share_log_sigma2`` this is Algorithm 1 proper.
"""

import torch

from lightning_fed.federation.algorithm import ClientUpdate, FederatedAlgorithm
from lightning_fed.federation.compression import DOWNLOAD
from lightning_fed.federation.config import FederationConfig
from lightning_fed.federation.downlink import check_download
from lightning_fed.federation.messages import AVERAGE, SERVER, Message
from lightning_fed.federation.rounds import Round
from lightning_fed.federation.server_optimizers import server_optimizer


def configured_server_optimizer(config: FederationConfig, host) -> torch.optim.Optimizer | None:
    """The server optimizer ``config`` names (FedAvg by default when devices send deltas); None:
    the module's own steps the average."""
    name = config.server_optimizer or ("fedavg" if config.sends_deltas else None)
    if name is None:
        return None
    shared = [host.lightning_module.get_parameter(t.name) for t in host.plan.shared]
    return server_optimizer(name, shared, config.server_lr, config.server_momentum)


def one_step_update(host, device: int, batch) -> ClientUpdate:
    """One local step: the device's shared gradients to upload with the ``M(alpha)`` that masks them
    (before its local parameters step), its local parameters stepped."""
    output, loss = host.local_step(device, batch)
    module = host.lightning_module
    keeps = host.plan.keeps(host.plan.masks(module))
    update = host.plan.gradients(module)
    host.step_local_parameters()
    return ClientUpdate(output, loss, update, keeps)


class PaperProtocol(FederatedAlgorithm):
    """Algorithm 1 of the paper and its variant (``config.share_log_sigma2`` says which)."""

    name = "paper"
    keeps_client_optimizer_state = True  # a device's optimizer of its local parameters persists

    def setup(self, host) -> None:
        self.config = host.config
        check_download(self.config.download, True, True, host.compression)

    def client_update(self, host, device: int, batches: list, start) -> ClientUpdate:
        (batch,) = batches
        return one_step_update(host, device, batch)

    def aggregate(self, host, this_round: Round, average, weight: float) -> list[torch.Tensor]:
        step = host.lightning_module.trainer.global_step
        payload = host.compression.encode_download(average, step=step, seed=(host.seed, DOWNLOAD, step))
        message = Message(AVERAGE, SERVER, step, payload)
        return host.deliver(message, host.compression.download_codec, receivers=len(this_round.sampled))

    def server_optimizer(self, host, module_optimizer):
        return configured_server_optimizer(self.config, host)
