"""The surviving mutants of the 2026-12-05 sample (docs/testing.md), each applied by hand to this
checkout and run against the quick test written for it; the source is restored after each.

    python results/mutation/verify_2026-12-05.py     # one line a mutant: killed, or NOT KILLED

The mutants were named by ``mutmut`` 3.8.1 at ba27a11; each case is the mutant's one-line change
(``python -m mutmut show NAME`` there), written against today's source.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = [
    (
        "datamodules.partitions.xǁPathologicalPartitionǁ__init____mutmut_11",
        "datamodules/partitions.py",
        'check_count("classes_per_device", classes_per_device)',
        "check_count(None, classes_per_device)",
        "tests/test_partitions.py",
    ),
    (
        "lightning_fed.communication.topk.xǁTopKǁ__init____mutmut_21",
        "lightning_fed/communication/topk.py",
        "density <= start_density <= 1",
        "density < start_density <= 1",
        "tests/test_compression.py::test_topk_keeps_exactly_the_k_largest_magnitudes_and_warms_up_exponentially",
    ),
    (
        "lightning_fed.communication.values.xǁSignǁ__init____mutmut_5",
        "lightning_fed/communication/values.py",
        '_check_block(block, "sign")',
        '_check_block(block, "XXsignXX")',
        "tests/test_compression.py -k bad_codec",
    ),
    (
        "lightning_fed.federation.aggregators.xǁCenteredClipǁ__init____mutmut_7",
        "lightning_fed/federation/aggregators.py",
        "not 0 < tau < math.inf",
        "not 0 <= tau < math.inf",
        "tests/test_aggregators.py -k bad_aggregator",
    ),
    (
        "lightning_fed.federation.attacks.x_choose_malicious__mutmut_18",
        "lightning_fed/federation/attacks.py",
        "size=count, replace=False)",
        "size=count, )",
        "tests/test_attacks.py -k distinct",
    ),
    (
        "lightning_fed.federation.device_rows.xǁDiskRowsǁ__init____mutmut_28 (now ROWS_FORMAT)",
        "lightning_fed/federation/device_rows.py",
        'header = {"format": ROWS_FORMAT,',
        'header = {"XXformatXX": ROWS_FORMAT,',
        "tests/test_federation.py -k header",
    ),
    (
        "lightning_fed.federation.device_rows.xǁDiskRowsǁ__init____mutmut_33",
        "lightning_fed/federation/device_rows.py",
        '"dtype": "float32", "layout": self.layout}',
        '"DTYPE": "float32", "layout": self.layout}',
        "tests/test_federation.py -k header",
    ),
    (
        "lightning_fed.federation.device_rows.xǁDiskRowsǁadopt__mutmut_30",
        "lightning_fed/federation/device_rows.py",
        "self._copy_range(origin, offset, target, missing)",
        "self._copy_range(origin, target, missing)",
        "tests/test_federation.py -k adopted",
    ),
    (
        "lightning_fed.federation.device_state.xǁDeviceStatesǁload_state_dict__mutmut_22",
        "lightning_fed/federation/device_state.py",
        "saved_state(state, self.stage_names, rows_file, rows_layout)",
        "saved_state(state, self.stage_names, rows_file, None)",
        "tests/test_federation.py -k without_a_header_are_read",
    ),
    (
        "lightning_fed.federation.health.xǁDeviceFailedǁ__init____mutmut_8",
        "lightning_fed/federation/health.py",
        '.rstrip(": ")',
        '.lstrip(": ")',
        "tests/test_federation.py -k failure_is_one_line",
    ),
    (
        "lightning_fed.federation.paper_protocol.x_configured_server_optimizer__mutmut_17",
        "lightning_fed/federation/paper_protocol.py",
        "config.server_lr, config.server_momentum)",
        "config.server_lr, )",
        "tests/test_rounds.py -k configured_rate",
    ),
    (
        "lightning_fed.federation.server_aggregation.x_screen__mutmut_24",
        "lightning_fed/federation/server_aggregation.py",
        "((tensor != 0) & ~keep).sum()",
        "((tensor != 0) & keep).sum()",
        "tests/test_aggregators.py -k mask_check",
    ),
    (
        "lightning_fed.privacy.adaptive_clip.xǁAdaptiveClipǁupdate__mutmut_16",
        "lightning_fed/privacy/adaptive_clip.py",
        "else (within or 0.0)",
        "else (within or 1.0)",
        "tests/test_privacy.py -k nobody",
    ),
    (
        "lightning_fed.secure.fixed_point.xǁFixedPointǁ__init____mutmut_29",
        "lightning_fed/secure/fixed_point.py",
        '"their sum could not be told from noise (at most 8,388,607 devices)"',
        '"THEIR SUM COULD NOT BE TOLD FROM NOISE (AT MOST 8,388,607 DEVICES)"',
        "tests/test_secagg.py -k too_large",
    ),
    (
        "lightning_fed.secure.transport.xǁSecureTransportǁ_secure_sum__mutmut_40",
        "lightning_fed/secure/transport.py",
        "Traffic(upload_bytes=up, download_bytes=down)",
        "Traffic(upload_bytes=up, )",
        "tests/test_secagg.py -k union_support_sums",
    ),
    (
        "lightning_fed.federation.attacks.xǁALittleIsEnoughǁ_args__mutmut_2 (no tests before)",
        "lightning_fed/federation/attacks.py",
        'return "" if self.z is None else f"{self.z:g}"',
        'return "XXXX" if self.z is None else f"{self.z:g}"',
        "tests/test_attacks.py -k names_itself",
    ),
    (
        "lightning_fed.federation.attacks.x_attack_of__mutmut_25",
        "lightning_fed/federation/attacks.py",
        'getattr(getattr(trainer, "datamodule", None), "info", None)',
        'getattr(getattr("datamodule", None), "info", None)',
        "tests/test_attacks.py -k label_flipping_reads",
    ),
    (
        "lightning_fed.federation.attacks.x_attack_of__mutmut_34",
        "lightning_fed/federation/attacks.py",
        'getattr(getattr(trainer, "lightning_module", None), "hparams", {})',
        'getattr(getattr(trainer, "lightning_module", None), None, {})',
        "tests/test_attacks.py -k label_flipping_reads",
    ),
    (
        "lightning_fed.federation.device_rows.xǁDiskRowsǁ_copy_range__mutmut_26 (no tests before)",
        "lightning_fed/federation/device_rows.py",
        "left, offset + at, at)",
        "left, offset - at, at)",
        "tests/test_federation.py -k adopted",
    ),
    (
        "lightning_fed.federation.device_state.xǁDeviceStatesǁ__init____mutmut_13",
        "lightning_fed/federation/device_state.py",
        'self.where = next((p.device for p in model.parameters()), torch.device("cpu"))',
        "self.where = next((p.device for p in model.parameters()), )",
        "tests/test_federation.py -k without_parameters",
    ),
    (
        "lightning_fed.privacy.dp_fedavg.x_dp_fedavg_of__mutmut_21",
        "lightning_fed/privacy/dp_fedavg.py",
        '"releases one device\'s data whole would meet it; choose a delta well below 1/N"',
        '"releases one device\'s data whole would meet it; choose a delta well below 1/n"',
        "tests/test_privacy.py -k one_over_n",
    ),
    (
        "lightning_fed.federation.config.x__check_count__mutmut_4",
        "lightning_fed/federation/config.py",
        "not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1",
        "not isinstance(value, numbers.Integral) and isinstance(value, bool) or value < 1",
        "tests/test_rounds.py -k bad_round",
    ),
    (
        "lightning_fed.federation.hosting.x_checked_device_store__mutmut_3",
        "lightning_fed/federation/hosting.py",
        "{', '.join(DEVICE_STORES)}",
        "{', '.join(None)}",
        "tests/test_rounds.py -k bad_round",
    ),
    (
        "lightning_fed.federation.stages.x_codec_stages__mutmut_7",
        "lightning_fed/federation/stages.py",
        "SparseCodec([e.name for e in codec.encodings], values=codec.values)",
        "SparseCodec(values=codec.values)",
        "tests/test_stages.py -k writer_keeps",
    ),
    (
        "lightning_fed.secure.transport.xǁSecureTransportǁserver_updates__mutmut_3 (no tests before)",
        "lightning_fed/secure/transport.py",
        '"under secure aggregation the server holds no single update (only their sum)"',
        '"UNDER SECURE AGGREGATION THE SERVER HOLDS NO SINGLE UPDATE (ONLY THEIR SUM)"',
        "tests/test_secagg.py -k no_single_update",
    ),
]


def main() -> int:
    missed = 0
    for name, path, old, new, test in CASES:
        f = ROOT / path
        text = f.read_text()
        assert text.count(old) == 1, (name, text.count(old))
        f.write_text(text.replace(old, new))
        try:
            r = subprocess.run(
                f"{sys.executable} -m pytest -q -x -p no:cacheprovider {test}",
                shell=True,
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
        finally:
            f.write_text(text)
        missed += r.returncode != 1
        print(
            "killed  " if r.returncode == 1 else f"NOT KILLED rc={r.returncode}", name, "|", test, flush=True
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
