"""The "Writing a policy" example of docs/policies.md registers a policy that passes check_policy."""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import numpy as np

import policies
from policies import base, make_policy
from policies.checks import check_policy

ROOT = Path(policies.__file__).parent.parent


def _section() -> str:
    """The "## Writing a policy" section of docs/policies.md."""
    page = (ROOT / "docs" / "policies.md").read_text()
    return re.search(r"^## Writing a policy\n.*?(?=^## |\Z)", page, re.S | re.M).group(0)


def test_readme_example_policy_passes_check_policy(tiny_world, monkeypatch, tmp_path):
    section = _section()
    code = re.search(r"## Writing a policy.*?```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 75
    (tmp_path / "readme_policy_example.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))   # register it for this test only
    monkeypatch.delitem(sys.modules, "readme_policy_example", raising=False)
    importlib.import_module("readme_policy_example")
    ran = check_policy(lambda: make_policy("mean_pool", d=8), tiny_world.train, tiny_world.batch())
    assert "deterministic" in ran and "refuses_oracle" in ran and "imports" in ran
    fitted = make_policy("mean_pool").fit(tiny_world.train, rng=np.random.default_rng(0))
    assert 1 <= len(fitted.history_) <= 5
