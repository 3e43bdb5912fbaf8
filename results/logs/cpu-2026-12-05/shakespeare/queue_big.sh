#!/bin/bash
# the FedAvg paper's char_lstm (two LSTM layers of 256), 300 rounds (about 4 epochs)
# (2026-12-05: the variant was stopped after its first epoch: at the CPU share it had it would have run past the session)
R="--network char_lstm --max-rounds 300 --max-epochs 5"
bash ~/lf-runs/shakespeare/run.sh big_r300_dense $R --dense
bash ~/lf-runs/shakespeare/run.sh big_r300_variant_kl0.1 $R --kl-warmup-epochs 1 --kl-final-weight 0.1
