"""docs/tutorial.md runs: its ```python blocks, in order, in one namespace, in an empty directory."""
from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def python_blocks(text: str) -> list[str]:
    """The code of every ```python block, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_the_tutorial_has_its_blocks():
    blocks = python_blocks(TUTORIAL.read_text())
    assert 8 <= len(blocks) <= 12, f"{len(blocks)} python blocks in {TUTORIAL.name}"


def test_every_tutorial_block_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__tutorial__"}
    for number, code in enumerate(python_blocks(TUTORIAL.read_text()), start=1):
        try:
            exec(compile(code, f"docs/tutorial.md, python block {number}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"docs/tutorial.md: python block {number} failed: {error!r}\n"
                        f"{traceback.format_exc()}\n--- block {number} ---\n{code}")
    # what the tutorial promises to leave behind: a simulated run, an A/B run with its report, and
    # the three estimators' draws of the bias demonstration
    assert (tmp_path / "runs" / "tiny" / "logs").is_dir() and len(namespace["logs"]) > 0
    assert (namespace["ab"].run_dir / "report.md").is_file()
    assert set(namespace["draws"]) == {"naive", "IPS", "SNIPS"} and all(namespace["draws"].values())
