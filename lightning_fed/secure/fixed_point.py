"""A device's update as the 32-bit words SecAgg+ adds, and the server's sum read back as floats.

Each value is clipped to ``[-range, range]`` and scaled to ``levels = (2^31 - 1) // max_devices``
steps per ``range``, rounded stochastically (unbiased: the expected word is the exact value
times the scale), and written modulo 2^32. The sum of up to ``max_devices`` such words cannot
leave the signed 32-bit range, so reading the sum as int32 and dividing by the scale gives the sum
of the rounded values exactly: a sum that could wrap is refused when the encoder is made. With 50
devices a round and a range of 1, one step is 2.3e-8.

Under Algorithm 1 the mask ``M(alpha)`` is public and the same for every device, so a device
writes only the kept coordinates (``keeps``): the secure sum runs over them, at sparse cost.

Example::

    >>> import torch
    >>> point = FixedPoint(value_range=1.0, max_devices=2)
    >>> a = point.encode([torch.tensor([0.5, -0.25, 0.0])], None, seed=0)
    >>> b = point.encode([torch.tensor([0.25, -0.5, 3.0])], None, seed=1)  # 3.0 is clipped to 1.0
    >>> total = (a.astype("u8") + b) % 2**32
    >>> [round(v, 6) for v in point.decode(total.astype("u4"), None, [3])[0].tolist()], point.clipped
    ([0.75, -0.75, 1.0], 1)
"""

import numpy as np
import torch


class FixedPoint:
    """The words of ``value_range``-clipped values, for sums of up to ``max_devices`` of them."""

    def __init__(self, value_range: float, max_devices: int) -> None:
        if not (isinstance(value_range, (int, float)) and 0 < value_range < float("inf")):
            raise ValueError(f"secagg range must be a finite number above 0, got {value_range!r}")
        self.levels = (2**31 - 1) // max(int(max_devices), 1)
        if self.levels < 2**8:
            raise ValueError(
                f"{max_devices} devices a round leave {self.levels} steps of 32-bit words to each value; "
                "their sum could not be told from noise (at most 8,388,607 devices)"
            )
        self.range = float(value_range)
        self.scale = self.levels / self.range
        self.clipped = 0  # values clipped to the range, since this encoder was made

    def encode(
        self, tensors: list[torch.Tensor], keeps: list[torch.Tensor | None] | None, seed
    ) -> np.ndarray:
        """One device's words: its tensors (the kept coordinates where ``keeps`` masks them), clipped,
        scaled, rounded stochastically with the ``seed``'s draws."""
        flat = np.concatenate(
            [_kept(t, keep) for t, keep in zip(tensors, keeps or [None] * len(tensors), strict=True)]
        )
        self.clipped += int(np.count_nonzero(np.abs(flat) > self.range))
        scaled = flat.astype(np.float64)  # the words' 31 bits need more than float32's 24
        np.clip(scaled, -self.range, self.range, out=scaled)
        scaled *= self.scale
        scaled += np.random.default_rng(seed).random(scaled.size)
        np.floor(scaled, out=scaled)
        return scaled.astype(np.int64).astype(np.uint32)  # two's complement: modulo 2^32

    def length(self, keeps, numels: list[int]) -> int:
        """How many words one device's input has: every value, or the kept ones where ``keeps`` masks.

        Example::

            >>> FixedPoint(1.0, 10).length([torch.tensor([True, False, True]), None], [3, 4])
            6
        """
        pairs = zip(numels, keeps or [None] * len(numels), strict=True)
        return sum(numel if keep is None else int(keep.sum()) for numel, keep in pairs)

    def decode(self, total: np.ndarray, keeps, numels: list[int]) -> list[torch.Tensor]:
        """The float sum of the words ``total``, placed back in tensors of ``numels`` (zeros where
        ``keeps`` pruned)."""
        values = total.astype(np.uint32).view(np.int32).astype(np.float64) / self.scale
        out, offset = [], 0
        for numel, keep in zip(numels, keeps or [None] * len(numels), strict=True):
            tensor = torch.zeros(numel, dtype=torch.float32)
            where = slice(None) if keep is None else keep.reshape(-1).cpu()
            count = numel if keep is None else int(where.sum())
            tensor[where] = torch.from_numpy(values[offset : offset + count].astype(np.float32))
            out.append(tensor)
            offset += count
        return out


def _kept(tensor: torch.Tensor, keep: torch.Tensor | None) -> np.ndarray:
    flat = tensor.detach().reshape(-1).to("cpu", torch.float32)
    if keep is not None:
        flat = flat[keep.reshape(-1).cpu()]
    return flat.numpy()
