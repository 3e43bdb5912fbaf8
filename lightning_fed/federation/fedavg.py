"""The FedAvg family: K sampled devices receive the model, train locally, send their updates.

Each round the server samples K devices (:class:`~lightning_fed.federation.rounds.RoundSchedule`)
and sends them the model (a payload, counted once per sampled device; or its change since the
copy they hold, :mod:`lightning_fed.federation.downlink`: one message when every device takes
part, each sampled device its own otherwise). Each reporting device trains H steps with
the client optimizer from a fresh state (FedProx adds ``mu * (w - w_start)`` to each gradient)
and uploads its masked model delta (H = 1: its masked gradient). The server averages them and
steps with its optimizer: FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021).
"""

import torch

from lightning_fed.federation.algorithm import ClientUpdate, FederatedAlgorithm
from lightning_fed.federation.compression import DOWNLOAD
from lightning_fed.federation.config import FederationConfig
from lightning_fed.federation.downlink import HELD, ModelDownlink, check_download, send_change, unsent_pairs
from lightning_fed.federation.messages import MODEL, SERVER, Message
from lightning_fed.federation.paper_protocol import configured_server_optimizer, one_step_update
from lightning_fed.federation.rounds import Round


class FedAvg(FederatedAlgorithm):
    """FedAvg and its family, as ``config`` says (K, H or local epochs, server and client optimizer)."""

    name = "fedavg"
    keeps_client_optimizer_state = False  # every round starts the client optimizer afresh

    downlink: ModelDownlink | None = None
    _server_model: list[torch.Tensor] | None = None  # the exact model, when the devices got a lossy copy
    each_own_copy = False  # download="delta" in sampled rounds: each device's copy in its row (HELD)

    def setup(self, host) -> None:
        self.config: FederationConfig = host.config
        self.downlink = ModelDownlink(self.config.download)
        host.compression.for_sampled_rounds(self.config.download)
        every = self.config.every_device(host.num_devices)
        check_download(self.config.download, every, False, host.compression, self.config.share_log_sigma2)
        self.each_own_copy = self.config.download == "delta" and not every
        if self.config.download == "sparse":
            if not any(t.mask_of for t in host.plan.shared):
                raise ValueError("download='sparse' needs a sparse variational model: no layer has M(alpha)")
            self.downlink.pairs = unsent_pairs(host.plan, host.lightning_module)

    def local_step_count(self, source, device: int) -> int:
        """H, or the batches of ``local_epochs`` passes over ``device``'s shard."""
        if self.config.local_epochs is None:
            return self.config.local_steps
        return self.config.local_epochs * source.batches_per_pass(device)

    def device_batches(self, host, source, device: int, state, batch_index: int) -> list:
        steps = self.local_step_count(source, device)
        batches = [source.batch(device, state.drawn + i) for i in range(steps)]
        state.drawn += steps
        return batches

    @property
    def device_row_names(self) -> tuple[str, ...]:
        """What this algorithm keeps in each device's row: its copy of the model, when it has its own."""
        return (HELD,) if self.each_own_copy else ()

    def send_model(self, host, this_round: Round) -> list[torch.Tensor] | None:
        """The server's model as the round's devices receive it: encoded, counted per receiver, decoded
        (None when each device receives its own, in :meth:`client_update`)."""
        module = host.lightning_module
        step = module.trainer.global_step
        exact = host.plan.values(module)
        if self.each_own_copy:
            self._server_model = exact
            return None
        sparse = self.config.download == "sparse"
        keeps = host.plan.keeps(host.plan.masks(module)) if sparse else None  # the public M(alpha)

        def deliver(payload, codec):
            return host.deliver(Message(MODEL, SERVER, step, payload), codec, len(this_round.sampled))

        received = self.downlink.send(
            exact, host.compression, deliver, step=step, seed=(host.seed, DOWNLOAD, step), keeps=keeps
        )
        lossy = host.compression.download_codec.lossy or self.config.download != "model"
        self._server_model = exact if lossy else None  # the server steps its own
        host.plan.write_parameters(module, received)
        return [t.to(host.root_device) for t in received]

    def receive_own_copy(self, host, device: int) -> list[torch.Tensor]:
        """``device``'s download of the change from the copy it holds (:func:`send_change`), written
        into the model as its start; its copy kept in its row."""
        module, state = host.lightning_module, host.devices.states[device]
        step = module.trainer.global_step

        def deliver(payload, codec):
            return host.transport_of_round.download_to_one(Message(MODEL, SERVER, step, payload), codec)

        held = state.stages.get(HELD)
        seed = (host.seed, DOWNLOAD, step, device)
        copy = send_change(self._server_model, held, host.compression, deliver, step=step, seed=seed)
        state.stages[HELD] = copy
        host.plan.write_parameters(module, copy)
        return [t.to(host.root_device) for t in copy]

    def client_update(self, host, device: int, batches: list, start: list[torch.Tensor]) -> ClientUpdate:
        """``device``'s local training from the round's model: its output, last loss and masked update."""
        module, plan, optimizer = host.lightning_module, host.plan, host.client_optimizer
        if self.each_own_copy:
            start = self.receive_own_copy(host, device)
        if not self.config.sends_deltas:  # one step: the masked gradient
            return one_step_update(host, device, batches[0])
        keeps = plan.keeps(plan.masks(module))  # M(alpha) as the round starts: pruned stays unsent
        for group in optimizer.param_groups:
            for param in group["params"]:
                optimizer.state.pop(param, None)
        output = loss = None
        for batch in batches:
            output, loss = host.local_step(device, batch)
            self._add_proximal_term(host, start)
            optimizer.step()
        host.clear_gradients()
        return ClientUpdate(output, loss, plan.delta(module, start), keeps)

    @torch.no_grad()
    def _add_proximal_term(self, host, start: list[torch.Tensor]) -> None:
        """FedProx: the gradient of ``mu / 2 * ||w - w_start||^2`` on the shared parameters."""
        if not self.config.proximal_mu:
            return
        module = host.lightning_module
        for tensor, origin in zip(host.plan.shared, start, strict=True):
            param = module.get_parameter(tensor.name)
            if param.grad is not None:
                param.grad.add_(param - origin.view_as(param), alpha=self.config.proximal_mu)

    def aggregate(self, host, this_round: Round, average, weight: float) -> list[torch.Tensor] | None:
        """The average update is the server optimizer's gradient (None when every device failed)."""
        if self.each_own_copy:  # the processes add up what their devices downloaded
            host.transport_of_round.settle_own_downloads()
        if self._server_model is not None:  # the devices started from a lossy copy; the server did not
            host.plan.write_parameters(host.lightning_module, self._server_model)
            self._server_model = None
        return average  # the server optimizer's gradient; None: every device failed

    def server_optimizer(self, host, module_optimizer):
        return configured_server_optimizer(self.config, host)

    def state_dict(self) -> dict:
        return {"downlink": self.downlink.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.downlink.load_state_dict(state.get("downlink"))
