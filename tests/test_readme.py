"""README.md and docs/*.md: every Python example runs as pasted, in a fresh interpreter from the
repository root, and prints what the page says it prints; README's commands each get their own
run folder, and the quick run comes first."""

import doctest
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A Python block, and the text block that follows it after a line starting "Prints", if any.
EXAMPLE = re.compile(r"```python\n(.*?)```\n(?:\nPrints[^\n]*:\n\n```text\n(.*?)```)?", flags=re.DOTALL)
EXAMPLES = [
    (f"{page.name}:{i}", code, printed)
    for page in PAGES
    for i, (code, printed) in enumerate(EXAMPLE.findall(page.read_text()))
]
README = (ROOT / "README.md").read_text()


def fit_commands(text: str) -> list[list[str]]:
    """The ``scripts/fit.py`` commands of a page's bash blocks, as argument lists.

    Example::

        >>> page = "```bash\\npython scripts/fit.py --devices 2 \\\\\\n    --output-dir /tmp/a  # note\\n```"
        >>> fit_commands(page)
        [['python', 'scripts/fit.py', '--devices', '2', '--output-dir', '/tmp/a']]
    """
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "scripts/fit.py" in words:
                commands.append(words)
    return commands


def printed_as_said(said: str, printed: str) -> bool:
    """Whether ``printed`` is what the page says, ``...`` standing for any text (doctest's rules)."""
    checker = doctest.OutputChecker()
    return checker.check_output(said, printed, doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)


def test_the_pages_have_python_examples_and_say_what_they_print():
    assert len(EXAMPLES) >= 5
    assert sum(bool(printed) for _, _, printed in EXAMPLES) >= 4


def test_readme_s_first_run_is_the_quick_one_and_every_run_has_its_own_folder():
    commands = fit_commands(README)
    assert len(commands) >= 2
    assert "mnist-5k" in commands[0] and "--max-epochs" in commands[0]  # the quick run comes first
    folders = [words[words.index("--output-dir") + 1] for words in commands if "--output-dir" in words]
    assert len(folders) == len(commands), "a README fit.py command without --output-dir shares runs/latest"
    assert len(set(folders)) == len(folders), folders


def test_readme_is_a_guide_not_a_diary():
    assert len(README.splitlines()) <= 300


def test_the_printed_check_tells_a_wrong_output():
    assert printed_as_said("5 rounds, ... bytes\n", "5 rounds, 1,234 bytes\n")
    assert not printed_as_said("5 rounds, ... bytes\n", "4 rounds, 1,234 bytes\n")


@pytest.mark.slow  # spawns an interpreter per example
@pytest.mark.parametrize(("code", "said"), [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES])
def test_an_example_runs_as_pasted_and_prints_what_the_page_says(code, said, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if said:
        assert printed_as_said(said, result.stdout), result.stdout[-3000:]
