#!/bin/bash
# the FedAvg paper's char_lstm (two LSTM layers of 256), 300 rounds (about 4 epochs)
R="--network char_lstm --max-rounds 300 --max-epochs 5"
bash ~/lf-runs/shakespeare/run.sh big_r300_dense $R --dense
bash ~/lf-runs/shakespeare/run.sh big_r300_variant_kl0.1 $R --kl-warmup-epochs 1 --kl-final-weight 0.1
