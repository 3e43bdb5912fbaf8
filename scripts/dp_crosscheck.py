"""A second accountant for DP-FedAvg's rounds: Microsoft's prv-accountant, in its own environment.

lightning-fed accounts with Google's ``dp-accounting``; this script computes the same settings'
epsilon with another library and another method (privacy random variables, Gopi, Lee and Wutschitz,
NeurIPS 2021), and prints JSON that ``tests/test_privacy.py`` compares ours with. It imports
nothing of lightning-fed, so it runs in a peer environment that holds only prv-accountant:

    python3 -m venv ~/peer-dp && ~/peer-dp/bin/pip install prv-accountant==0.2.0
    ~/peer-dp/bin/python scripts/dp_crosscheck.py > results/dp_crosscheck.json

Each row: N devices, K expected a round (Poisson sampling, q = K / N), noise multiplier sigma,
rounds, delta, and prv-accountant's (lower bound, estimate, upper bound) of epsilon, with
``eps_error`` 0.01.
"""

import json
import sys

SETTINGS = [  # (N, K, sigma, rounds): the 1,000-device runs' and smaller ones
    (1000, 50, 1.0, 200),
    (1000, 50, 0.8, 300),
    (1000, 50, 1.5, 200),
    (1000, 10, 1.0, 1000),
    (100, 10, 1.0, 100),
    (100, 10, 2.0, 500),
]
DELTA = 1e-5


def main() -> None:
    from importlib.metadata import version

    from prv_accountant.dpsgd import DPSGDAccountant

    rows = []
    for num_devices, per_round, sigma, rounds in SETTINGS:
        accountant = DPSGDAccountant(
            noise_multiplier=sigma, sampling_probability=per_round / num_devices, eps_error=0.01,
            delta_error=1e-10, max_steps=rounds,
        )  # fmt: skip
        low, estimate, high = accountant.compute_epsilon(delta=DELTA, num_steps=rounds)
        rows.append({
            "num_devices": num_devices, "per_round": per_round, "sigma": sigma, "rounds": rounds,
            "delta": DELTA, "prv_epsilon": [low, estimate, high],
        })  # fmt: skip
    command = "~/peer-dp/bin/python scripts/dp_crosscheck.py > results/dp_crosscheck.json"
    json.dump(
        {"accountant": f"prv-accountant {version('prv-accountant')}", "command": command, "rows": rows},
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
