"""Who shares secrets with whom in a SecAgg+ round: a k-regular graph over the round's devices.

Bell et al. (CCS 2020) replace classic SecAgg's complete graph (Bonawitz et al., CCS 2017) by a
sparse random one, so each device agrees masks with and shares its secrets among k neighbours
instead of all n - 1, at O(log n) cost. Here the round's devices are placed in a seeded random
order on a ring and each is joined to the k / 2 nearest on either side (a Harary graph; k odd
adds the opposite device when n is even, else k is rounded up); k >= n - 1 is the complete graph.

Example::

    >>> graph = neighbour_graph([10, 11, 12, 13, 14, 15], neighbours=2, seed=0)
    >>> sorted(len(n) for n in graph.values())
    [2, 2, 2, 2, 2, 2]
    >>> all(a in graph[b] for a in graph for b in graph[a])  # symmetric
    True
    >>> neighbour_graph([1, 2, 3], neighbours=8, seed=0)
    {1: [2, 3], 2: [1, 3], 3: [1, 2]}
"""

import numpy as np


def neighbour_graph(devices: list[int], neighbours: int, seed) -> dict[int, list[int]]:
    """Each of ``devices`` with its sorted neighbours: a seeded ``neighbours``-regular graph."""
    n = len(devices)
    if neighbours >= n - 1:
        return {d: sorted(e for e in devices if e != d) for d in devices}
    order = [devices[i] for i in np.random.default_rng(seed).permutation(n)]
    offsets = set(range(1, neighbours // 2 + 1))
    if neighbours % 2:
        if n % 2 == 0:
            offsets.add(n // 2)
        else:
            offsets.add(neighbours // 2 + 1)  # an odd k on an odd ring: one more each side
    graph = {d: set() for d in devices}
    for position, device in enumerate(order):
        for offset in offsets:
            for other in (order[(position + offset) % n], order[(position - offset) % n]):
                graph[device].add(other)
    return {d: sorted(graph[d]) for d in devices}
