"""The networks ``modules.networks`` builds, by name; no torch needed (a command line's choices).

Example::

    >>> from modules.networks import NETWORKS
    >>> tuple(NETWORKS) == NETWORK_NAMES
    True
"""

NETWORK_NAMES = ("char_lstm", "char_lstm_small", "cifarnet", "lenet5", "lenet300_100", "resnet18", "vgg_like")
TEXT_NETWORKS = ("char_lstm", "char_lstm_small")  # for text data sets only; the others for images
