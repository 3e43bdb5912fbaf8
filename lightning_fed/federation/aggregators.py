"""Robust aggregation: what the server makes of the round's individual updates.

The default aggregate is the (weighted) mean, a running sum the transports keep. A robust
aggregator needs each device's decoded update, so the transport hands the server the list, in
device order (:meth:`~lightning_fed.federation.transport.InProcess.server_updates`), and the
aggregator returns the round's update. Each works coordinate by coordinate or on whole updates
flattened into one vector:

- :class:`Median`: the coordinate-wise median (Yin et al., ICML 2018; the mean of the two middle
  values for an even count).
- :class:`TrimmedMean`: per coordinate, the ``floor(beta n)`` largest and smallest values
  dropped, the rest averaged (Yin et al. 2018).
- :class:`Krum`: the update with the smallest sum of squared distances to its ``n - f - 2``
  nearest others; with ``m > 1`` the mean of the ``m`` best (Multi-Krum; Blanchard et al.,
  NeurIPS 2017). Needs ``n > 2f + 2``.
- :class:`Bulyan`: ``n - 2f`` updates chosen by Krum one after another, then per coordinate the
  mean of the ``n - 4f`` values closest to their median (El Mhamdi et al., ICML 2018). Needs
  ``n >= 4f + 3``.
- :class:`NormBound`: each update scaled to L2 norm at most ``bound``, then the mean (Sun et al.
  2019, "Can you really backdoor federated learning?").
- :class:`CenteredClip`: from the last round's aggregate ``v``, ``iterations`` times
  ``v <- v + mean_i (x_i - v) min(1, tau / ||x_i - v||)`` (Karimireddy, He, Jaggi, ICML 2021).

**Coordinates a device did not send.** A sparse upload leaves out the weights its sender's
``M(alpha)`` prunes; its decoded update holds zero there, and every aggregator takes that zero as
the device's value, as the paper's average over all N devices does. Under Algorithm 1 the mask
is public and the same for everyone, so outside it every value is zero and so is the aggregate;
under the paper's variant a coordinate that few devices send is pulled towards zero by the
others' zeros (a median of mostly zeros is zero).

Example::

    >>> updates = [[torch.tensor([1.0, 10.0])], [torch.tensor([2.0, 20.0])], [torch.tensor([900.0, -5.0])]]
    >>> Median()(updates)[0].tolist()
    [2.0, 10.0]
    >>> make_aggregator("trimmed_mean:0.34")(updates)[0].tolist()
    [2.0, 10.0]
    >>> make_aggregator("krum:0")(updates)[0].tolist()  # f = 0: the update closest to the others
    [1.0, 10.0]
"""

import math

import torch

Update = list[torch.Tensor]  # one device's decoded update: flat tensors in the plan's order

AGGREGATORS = (
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "norm_bound",
    "centered_clip",
)
SPECS = (
    "mean, median, trimmed_mean:BETA, krum:F, multi_krum:F:M, bulyan:F, norm_bound:BOUND, "
    "centered_clip:TAU[:ITERATIONS]"
)


def _stacked(updates: list[Update]) -> torch.Tensor:
    """The updates as one (n, d) matrix of float64 rows (exact sums and distances for float32 inputs)."""
    return torch.stack([torch.cat([t.reshape(-1).double() for t in update]) for update in updates])


def _split(flat: torch.Tensor, like: Update) -> Update:
    return [
        part.view_as(t).to(t.dtype)
        for part, t in zip(flat.split([t.numel() for t in like]), like, strict=True)
    ]


class Aggregator:
    """The server's rule for a round's updates (a list, in device order): ``__call__`` returns
    the round's update. ``needs_updates``: it needs each one (else the transport's running sum
    serves)."""

    needs_updates = True
    name = "mean"

    def check_round(self, n: int) -> None:
        """A one-line error where ``n`` updates a round are too few for the rule."""

    def __call__(self, updates: list[Update]) -> Update:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


class Mean(Aggregator):
    """The plain mean (the transports' weighted running sum does it; this is for direct use)."""

    needs_updates = False

    def __call__(self, updates):
        return _split(_stacked(updates).mean(0), updates[0])

    def __repr__(self) -> str:
        return "mean"


class Median(Aggregator):
    name = "median"

    def __call__(self, updates):
        return _split(
            _stacked(updates).median(0).values if len(updates) % 2 else _middle_mean(updates), updates[0]
        )

    def __repr__(self) -> str:
        return "median"


def _middle_mean(updates: list[Update]) -> torch.Tensor:
    ordered = _stacked(updates).sort(0).values
    half = len(updates) // 2
    return (ordered[half - 1] + ordered[half]) / 2


class TrimmedMean(Aggregator):
    name = "trimmed_mean"

    def __init__(self, beta: float) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 0.5:
            raise ValueError(f"trimmed_mean's trim fraction must be in [0, 0.5), got {beta!r}")
        self.beta = float(beta)

    def __repr__(self) -> str:
        return f"trimmed_mean:{self.beta:g}"

    def __call__(self, updates):
        n = len(updates)
        cut = math.floor(self.beta * n)
        ordered = _stacked(updates).sort(0).values
        return _split(ordered[cut : n - cut].mean(0), updates[0])


def _check_faulty(name: str, f) -> int:
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(f"{name}'s number of faulty devices must be an integer >= 0, got {f!r}")
    return f


def krum_scores(rows: torch.Tensor, f: int) -> torch.Tensor:
    """Each row's sum of squared distances to its ``n - f - 2`` nearest other rows."""
    distances = torch.cdist(rows, rows).pow(2)
    n = rows.shape[0]
    nearest = distances.sort(1).values[:, 1 : n - f - 1]  # column 0: the row itself
    return nearest.sum(1)


class Krum(Aggregator):
    """Krum (``m = 1``) and Multi-Krum (the mean of the ``m`` best-scored updates)."""

    name = "krum"

    def __init__(self, f: int, m: int = 1) -> None:
        self.f = _check_faulty("krum", f)
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"multi_krum's M must be an integer >= 1, got {m!r}")
        self.m = m
        self.chosen: list[int] = []  # the positions in the round's list Krum chose last

    def __repr__(self) -> str:
        return f"krum:{self.f}" if self.m == 1 else f"multi_krum:{self.f}:{self.m}"

    def check_round(self, n: int) -> None:
        if n <= 2 * self.f + 2:
            raise ValueError(f"{self!r} needs more than 2f + 2 = {2 * self.f + 2} updates a round, got {n}")
        if self.m > n:
            raise ValueError(f"{self!r} averages {self.m} updates, more than the round's {n}")

    def __call__(self, updates):
        self.check_round(len(updates))
        rows = _stacked(updates)
        self.chosen = krum_scores(rows, self.f).argsort()[: self.m].tolist()
        return _split(rows[self.chosen].mean(0), updates[0])


class Bulyan(Aggregator):
    name = "bulyan"

    def __init__(self, f: int) -> None:
        self.f = _check_faulty("bulyan", f)

    def __repr__(self) -> str:
        return f"bulyan:{self.f}"

    def check_round(self, n: int) -> None:
        if n < 4 * self.f + 3:
            raise ValueError(f"{self!r} needs at least 4f + 3 = {4 * self.f + 3} updates a round, got {n}")

    def __call__(self, updates):
        self.check_round(len(updates))
        rows, f = _stacked(updates), self.f
        left, selected = list(range(len(updates))), []
        while len(selected) < len(updates) - 2 * f:  # Krum over what is left, one at a time
            scores = krum_scores(rows[left], f)  # fewer than f + 2 left: nobody's neighbours count
            selected.append(left.pop(int(scores.argmin())))
        chosen = rows[selected]
        beta = len(selected) - 2 * f
        median = chosen.median(0).values if len(selected) % 2 else _middle_mean([[r] for r in chosen])
        closest = (chosen - median).abs().argsort(0)[:beta]
        return _split(chosen.gather(0, closest).mean(0), updates[0])


class NormBound(Aggregator):
    name = "norm_bound"

    def __init__(self, bound: float) -> None:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 < bound < math.inf:
            raise ValueError(f"norm_bound's bound must be a finite number > 0, got {bound!r}")
        self.bound = float(bound)

    def __repr__(self) -> str:
        return f"norm_bound:{self.bound:g}"

    def __call__(self, updates):
        rows = _stacked(updates)
        norms = rows.norm(dim=1, keepdim=True)
        scale = torch.where(norms > self.bound, self.bound / norms.clamp_min(1e-300), torch.ones_like(norms))
        return _split((rows * scale).mean(0), updates[0])


class CenteredClip(Aggregator):
    name = "centered_clip"

    def __init__(self, tau: float, iterations: int = 1) -> None:
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau < math.inf:
            raise ValueError(f"centered_clip's radius must be a finite number > 0, got {tau!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"centered_clip's iterations must be an integer >= 1, got {iterations!r}")
        self.tau, self.iterations = float(tau), iterations
        self.center: torch.Tensor | None = None  # the last round's aggregate (zeros at first)

    def __repr__(self) -> str:
        return f"centered_clip:{self.tau:g}:{self.iterations}"

    def __call__(self, updates):
        rows = _stacked(updates)
        v = rows.new_zeros(rows.shape[1]) if self.center is None else self.center.to(rows)
        for _ in range(self.iterations):
            away = rows - v
            norms = away.norm(dim=1, keepdim=True)
            scale = torch.where(norms > self.tau, self.tau / norms.clamp_min(1e-300), torch.ones_like(norms))
            v = v + (away * scale).mean(0)
        self.center = v
        return _split(v, updates[0])

    def state_dict(self) -> dict:
        return {"center": self.center}

    def load_state_dict(self, state: dict) -> None:
        self.center = state.get("center")


def make_aggregator(spec: "str | Aggregator | None", option: str = "aggregator") -> Aggregator:
    """The aggregator of ``spec`` (``"median"``, ``"krum:2"``; None: the mean); errors name ``option``."""
    if isinstance(spec, Aggregator):
        return spec
    if spec is None or spec == "mean":
        return Mean()
    name, *args = str(spec).split(":")
    try:
        numbers = [float(a) if "." in a or "e" in a.lower() else int(a) for a in args]
    except ValueError:
        raise ValueError(f"{option} {spec!r}: {spec!r} has a value that is not a number") from None
    builders = {
        ("median", 0): lambda: Median(),
        ("trimmed_mean", 1): lambda: TrimmedMean(*numbers),
        ("krum", 1): lambda: Krum(*numbers),
        ("multi_krum", 2): lambda: Krum(*numbers),
        ("bulyan", 1): lambda: Bulyan(*numbers),
        ("norm_bound", 1): lambda: NormBound(*numbers),
        ("centered_clip", 1): lambda: CenteredClip(*numbers),
        ("centered_clip", 2): lambda: CenteredClip(*numbers),
    }
    build = builders.get((name, len(numbers)))
    if build is None:
        raise ValueError(f"{option} {spec!r}: unknown or malformed; aggregators are {SPECS}")
    try:
        return build()
    except ValueError as error:
        raise ValueError(f"{option} {spec!r}: {error}") from None
