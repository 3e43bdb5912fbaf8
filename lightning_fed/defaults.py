"""The paper's defaults for sparse variational dropout, in one place that needs no torch."""

DEFAULT_THRESHOLD = 3.0  # T: a weight with log alpha >= T is pruned (its gradient never sent)
DEFAULT_INIT_LOG_SIGMA2 = -10.0  # every log sigma^2 starts here: alpha about 0, the weight kept
