"""The layers of the library: the core imports neither the run support nor the project's folders."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = [
    p
    for p in (ROOT / "lightning_fed").rglob("*.py")
    if "runs" not in p.relative_to(ROOT / "lightning_fed").parts
]


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_core_module_imports_the_run_support_matplotlib_or_the_project_s_folders():
    outside = ("lightning_fed.runs", "matplotlib", "callbacks", "modules", "datamodules", "scripts")
    offending = {
        str(path.relative_to(ROOT)): sorted(
            n for n in _imported(path) if n.split(".")[0] in outside or n.startswith(outside)
        )
        for path in CORE
    }
    assert CORE and not {k: v for k, v in offending.items() if v}


def test_importing_the_core_loads_no_run_support():
    code = (
        "import sys, lightning_fed.strategy, lightning_fed.communication\n"
        "import lightning_fed.federation, lightning_fed.nn\n"
        "print(sorted(m for m in sys.modules if m.startswith('lightning_fed.runs')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_a_run_with_w_and_b_disabled_needs_no_wandb_package():
    """fit.py's modules and the callbacks import wandb only where a W&B logger is made (a GPU machine
    without the package ran the rows of configs/fmnist_gpu_next.rows that way)."""
    code = (
        "import sys; sys.modules['wandb'] = None\n"  # import wandb now raises ImportError
        "import scripts.fit_run, callbacks, lightning_fed.runs.wandb_run\n"
        "from callbacks.sparsity_monitor import SparsityMonitor\n"
        "SparsityMonitor._histograms(type('T', (), {'loggers': []})(), None)\n"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
