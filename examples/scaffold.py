"""SCAFFOLD (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning", ICML 2020), written against lightning-fed's public algorithm interface only.

Each device keeps a control variate ``c_i`` and the server one ``c`` (zeros at first). A round's
devices receive the model ``x`` and ``c`` (one download message of both, counted); each takes K
local SGD steps ``y <- y - lr (g(y) - c_i + c)``, then (the paper's option II)
``c_i+ = c_i - c + (x - y) / (K lr)``, and uploads ``(x - y, c_i+ - c_i)`` in one message. The
server steps ``x`` with the average of ``x - y`` (FedAvg, ``server_lr``) and moves
``c <- c + |S| / N * mean(c_i+ - c_i)`` over the devices ``S`` that reported.

Run it as any algorithm::

    strategy = FederatedStrategy(
        algorithm=Scaffold(), devices_per_round=10, local_steps=5, client_optimizer="sgd"
    )

It needs the client SGD (the control variates' rule assumes it); a device's ``c_i`` lives in its
own state (its ``algorithm`` part, ``["scaffold_c"]``), checkpointed with it.
"""

import torch

from lightning_fed.federation.algorithm import ClientUpdate, FederatedAlgorithm


class Scaffold(FederatedAlgorithm):
    """SCAFFOLD's round: control variates sent both ways, counted with the model.

    Example::

        >>> from lightning_fed import FederatedStrategy
        >>> strategy = FederatedStrategy(algorithm=Scaffold(), devices_per_round=2, local_steps=3)
        >>> strategy.algorithm.name
        'scaffold'
    """

    name = "scaffold"
    keeps_client_optimizer_state = False

    def __init__(self) -> None:
        self.server_c: list[torch.Tensor] | None = None
        self._exact: list[torch.Tensor] | None = None

    def setup(self, host) -> None:
        if host.config.client_optimizer != "sgd" or not host.config.sends_deltas:
            raise ValueError("Scaffold needs client_optimizer='sgd' and local_steps > 1 (or local_epochs)")
        if self.server_c is None:
            self.server_c = [torch.zeros(n) for n in host.plan.numels]

    def upload_numels(self, host) -> list[int]:
        return host.plan.numels * 2  # the model delta, then the control variate's change

    def device_batches(self, host, source, device, state, batch_index):
        """H batches of the device's stream (or ``local_epochs`` passes over its shard)."""
        epochs = host.config.local_epochs
        steps = host.config.local_steps if epochs is None else epochs * source.batches_per_pass(device)
        state.drawn += steps
        return [source.batch(device, state.drawn - steps + i) for i in range(steps)]

    def send_model(self, host, this_round):
        model = host.plan.values(host.lightning_module)
        received = host.send_to_devices(model + self.server_c, receivers=len(this_round.sampled))
        n = len(model)
        self._exact, self._received_c = model, received[n:]
        host.plan.write_parameters(host.lightning_module, received[:n])
        return [t.to(host.root_device) for t in received[:n]]

    def client_update(self, host, device, batches, start):
        module, plan, optimizer = host.lightning_module, host.plan, host.client_optimizer
        state = host.devices.states[device].algorithm
        c_i = state.get("scaffold_c") or [torch.zeros(n) for n in plan.numels]
        correction = [c - ci for c, ci in zip(self._received_c, c_i, strict=True)]
        keeps = plan.keeps(plan.masks(module))  # M(alpha) at the round's start
        optimizer.state.clear()
        for batch in batches:
            output, loss = host.local_step(device, batch)
            for tensor, fix in zip(plan.shared, correction, strict=True):
                grad = module.get_parameter(tensor.name).grad
                if grad is not None:
                    grad.add_(fix.view_as(grad).to(grad.device))
            optimizer.step()
        host.clear_gradients()
        delta = [d if k is None else d * k for d, k in zip(plan.delta(module, start), keeps, strict=True)]
        lr = optimizer.param_groups[0]["lr"]
        scale = 1.0 / (len(batches) * lr)
        new_c = [ci - c + d.cpu() * scale for ci, c, d in zip(c_i, self._received_c, delta, strict=True)]
        state["scaffold_c"] = new_c
        change = [new - old for new, old in zip(new_c, c_i, strict=True)]
        change = [t.to(delta[0].device) for t in change]
        return ClientUpdate(output, loss, delta + change, keeps + [None] * len(change))

    def aggregate(self, host, this_round, average, weight):
        host.plan.write_parameters(host.lightning_module, self._exact)  # the server steps its own model
        if average is None:
            return None
        n = len(host.plan.numels)
        fraction = len(this_round.reporting) / host.num_devices
        self.server_c = [c + fraction * t.cpu() for c, t in zip(self.server_c, average[n:], strict=True)]
        return average[:n]

    def server_optimizer(self, host, module_optimizer):
        from lightning_fed.federation.server_optimizers import server_optimizer

        shared = [host.lightning_module.get_parameter(t.name) for t in host.plan.shared]
        return server_optimizer("fedavg", shared, host.config.server_lr, host.config.server_momentum)

    def state_dict(self) -> dict:
        return {"server_c": self.server_c}

    def load_state_dict(self, state: dict) -> None:
        self.server_c = state.get("server_c", self.server_c)
