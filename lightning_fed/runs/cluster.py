"""Who started a run's processes: fit.py itself (Lightning's launcher spawns the device processes of
each node), or a cluster launcher that started every process already: ``torchrun`` (Lightning's
torchelastic environment) or SLURM's ``srun`` (its SLURM environment). Under a cluster launcher
fit.py spawns nothing; the process of global rank 0 writes the run folder, the others only their
device files, and the first process of every node says which node it is.

Example::

    >>> cluster_launcher({"TORCHELASTIC_RUN_ID": "7", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"})
    'torchrun'
    >>> launched_shape({"TORCHELASTIC_RUN_ID": "7", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"})
    (2, 2)
    >>> cluster_launcher({"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "interactive"}) is None  # salloc's shell
    True
"""

import os
from collections.abc import Mapping

LAUNCH_FLAGS = {"torchrun": ("--nproc-per-node", "--nnodes"), "slurm": ("--ntasks-per-node", "--nodes")}


def cluster_launcher(environ: Mapping[str, str] = os.environ) -> str | None:
    """``"torchrun"``, ``"slurm"`` (an ``srun`` task outside an interactive job) or None (fit.py)."""
    if environ.get("TORCHELASTIC_RUN_ID") is not None:
        return "torchrun"
    if "SLURM_NTASKS" in environ and environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "slurm"
    return None


def launched_shape(environ: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """(processes per node, nodes) as the cluster launcher started them; None under fit.py."""
    launcher = cluster_launcher(environ)
    if launcher == "torchrun":
        per_node = int(environ.get("LOCAL_WORLD_SIZE", "1"))
        return per_node, int(environ.get("WORLD_SIZE", str(per_node))) // per_node
    if launcher == "slurm":
        nodes = int(environ.get("SLURM_NNODES", "1"))
        per_node = environ.get("SLURM_NTASKS_PER_NODE")
        return (int(per_node) if per_node else int(environ["SLURM_NTASKS"]) // nodes), nodes
    return None


def global_rank(environ: Mapping[str, str] = os.environ) -> int:
    """This process's global rank as its launcher set it (0 under fit.py before it spawns)."""
    launcher = cluster_launcher(environ)
    if launcher == "torchrun":
        return int(environ.get("RANK", "0"))
    if launcher == "slurm":
        return int(environ.get("SLURM_PROCID", "0"))
    return 0


def node_line(
    output, processes: int = 1, num_nodes: int = 1, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The line the first process of a node prints when a run spans nodes (None: not that process,
    or one node). Under fit.py itself (``NODE_RANK`` set by hand) ``processes`` and ``num_nodes``
    are fit.py's flags; under torchrun or srun, what the launcher started.

    Example::

        >>> env = {"TORCHELASTIC_RUN_ID": "7", "LOCAL_WORLD_SIZE": "1", "WORLD_SIZE": "2", "RANK": "1",
        ...        "LOCAL_RANK": "0", "GROUP_RANK": "1"}
        >>> node_line("/runs/a", environ=env)
        'fit.py: node 1 of 2 (torchrun, processes 1-1): device files only, under /runs/a on this machine'
        >>> node_line("/runs/a", processes=2, num_nodes=2, environ={"NODE_RANK": "0"})
        'fit.py: node 0 of 2 (fit.py, processes 0-1): the run folder /runs/a'
    """
    launcher = cluster_launcher(environ)
    if launcher is None:
        if num_nodes == 1 or "LOCAL_RANK" in environ:
            return None
        node, nodes, per_node, launcher = int(environ.get("NODE_RANK", "0")), num_nodes, processes, "fit.py"
        first = node * per_node
    else:
        if int(environ.get("LOCAL_RANK" if launcher == "torchrun" else "SLURM_LOCALID", "0")) != 0:
            return None
        per_node, nodes = launched_shape(environ)
        node = int(environ.get("GROUP_RANK" if launcher == "torchrun" else "SLURM_NODEID", "0"))
        first = global_rank(environ)
    where = f"the run folder {output}" if first == 0 else f"device files only, under {output} on this machine"
    return f"fit.py: node {node} of {nodes} ({launcher}, processes {first}-{first + per_node - 1}): {where}"


def check_launched_shape(
    processes: int | None, num_nodes: int, environ: Mapping[str, str] = os.environ
) -> int | None:
    """``--processes`` and ``--num-nodes`` against what the cluster launcher started: the processes per
    node to use, or a one-line ``ValueError`` naming both flags; None under fit.py.

    Example::

        >>> env = {"TORCHELASTIC_RUN_ID": "7", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}
        >>> check_launched_shape(None, 2, env)
        2
        >>> try:
        ...     check_launched_shape(4, 2, env)
        ... except ValueError as error:
        ...     print(str(error).split("; ")[0])
        processes=4, but torchrun started 2 a node (--nproc-per-node 2)
    """
    shape = launched_shape(environ)
    if shape is None:
        return None
    launcher, (per_node, nodes) = cluster_launcher(environ), shape
    flag_processes, flag_nodes = LAUNCH_FLAGS[launcher]
    if processes is not None and processes != per_node:
        raise ValueError(
            f"processes={processes}, but {launcher} started {per_node} a node ({flag_processes} {per_node}); "
            f"give processes={per_node} or leave it out"
        )
    if num_nodes != nodes:
        raise ValueError(
            f"num_nodes={num_nodes}, but {launcher} started {nodes} nodes ({flag_nodes} {nodes}); "
            f"give num_nodes={nodes}"
        )
    return per_node
