"""What a training run needs around the federated core, apart from it: the scripts' one-line
argument errors (:mod:`~lightning_fed.runs.cli`), one run per folder
(:mod:`~lightning_fed.runs.run_lock`), a run's per-epoch figures read back from its logs
(:mod:`~lightning_fed.runs.epoch_log`), its plots (:mod:`~lightning_fed.runs.plots`, the only
user of matplotlib), where its processes run (:mod:`~lightning_fed.runs.hardware`), its
summary (:mod:`~lightning_fed.runs.summary`), a fresh or resumed start
(:mod:`~lightning_fed.runs.resume`) and its W&B logging
(:mod:`~lightning_fed.runs.wandb_run`). Nothing in the core imports this package.
"""
