"""The DDP communication hook of the federated protocol: average the masked gradients, count them.

DDP hands the hook a bucket of flattened gradients, already masked by ``M(alpha)`` on each device
(tensor hooks in the module). The hook exchanges them, divides by N (the server's average), and
records upload and download in the ledger. Two transports give the same average:

- ``sparse``: each device sends only its non-zero entries (indices and values, all-gathered and
  padded to the largest count), densified inside the hook;
- ``dense``: an all-reduce of the masked buffer; the traffic is counted as the sparse encoding.
"""

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from lightning_fed.communication import CommunicationLedger, bucket_traffic, decode_sum, encode

TRANSPORTS = ("sparse", "dense")


@dataclass
class FederatedHookState:
    """What the hook needs: the ledger, the transport, and which parameters dense SGD would send."""

    ledger: CommunicationLedger
    transport: str = "dense"
    process_group: dist.ProcessGroup | None = None
    not_in_dense_baseline: set[int] = field(default_factory=set)  # ids of shared log_sigma2

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.process_group)


def _all_gather(tensor: torch.Tensor, group) -> list[torch.Tensor]:
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, tensor, group=group)
    return out


def sparse_exchange(buffer: torch.Tensor, group) -> torch.Tensor:
    """Sum of every device's ``buffer``, sending only non-zero entries (padded to the largest count)."""
    indices, values = encode(buffer)
    count = torch.tensor([indices.numel()], device=buffer.device)
    largest = int(torch.stack(_all_gather(count, group)).max())
    padded_indices = torch.zeros(largest, dtype=torch.int64, device=buffer.device)
    padded_values = torch.zeros(largest, dtype=buffer.dtype, device=buffer.device)
    padded_indices[: indices.numel()] = indices
    padded_values[: values.numel()] = values
    all_indices = torch.cat(_all_gather(padded_indices, group))
    all_values = torch.cat(_all_gather(padded_values, group))
    return decode_sum(buffer.numel(), all_indices, all_values, buffer)


def _tensor_counts(flat: torch.Tensor, numels: list[int]) -> torch.Tensor:
    return torch.stack([part.count_nonzero() for part in flat.split(numels)])


def federated_comm_hook(
    state: FederatedHookState, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: exchange the masked gradients of one bucket, average over N, count traffic."""
    group, world = state.process_group, state.world_size
    buffer = bucket.buffer()
    params = bucket.parameters()
    numels = [p.numel() for p in params]
    upload_counts = torch.stack(_all_gather(_tensor_counts(buffer, numels), group)).tolist()
    dense_mask = [id(p) not in state.not_in_dense_baseline for p in params]

    def average_and_count(total: torch.Tensor) -> torch.Tensor:
        average = total.div_(world)
        download_counts = _tensor_counts(average, numels).tolist()
        state.ledger.record(bucket_traffic(upload_counts, download_counts, numels, dense_mask, world))
        return average

    if state.transport == "dense":
        future = dist.all_reduce(buffer, group=group, async_op=True).get_future()
        return future.then(lambda fut: average_and_count(fut.value()[0]))
    future = torch.futures.Future()
    future.set_result(average_and_count(sparse_exchange(buffer, group)))
    return future
