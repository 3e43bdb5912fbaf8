"""The networks ``modules.networks`` builds, by name; no torch needed (a command line's choices).

Example::

    >>> from modules.networks import NETWORKS
    >>> tuple(NETWORKS) == NETWORK_NAMES
    True
"""

NETWORK_NAMES = ("cifarnet", "lenet5", "lenet300_100", "resnet18", "vgg_like")
