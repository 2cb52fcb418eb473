"""The examples of docs/estimators.md run and print exactly the output shown under them."""

import contextlib
import io
import re
from pathlib import Path

import estimators

ROOT = Path(estimators.__file__).parent.parent


def _section() -> str:
    """The page docs/estimators.md."""
    return (ROOT / "docs" / "estimators.md").read_text()


def test_readme_example_prints_what_the_readme_shows():
    section = _section()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```python\n.*?```\s*```text\n(.*?)```", section, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 15
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README example", "exec"), {})
    assert printed.getvalue() == shown
    # and the story it tells holds: naive far off, the weighting estimators cover the oracle
    lines = {line.split()[0]: line for line in shown.splitlines()}
    oracle = float(lines["oracle"].split()[1])
    assert float(lines["naive"].split()[1]) > oracle + 0.1
    for name in ("IPS", "SNIPS", "DR"):
        low, high = map(float, re.search(r"\[(\S+), (\S+)\]", lines[name]).groups())
        assert low <= oracle <= high, name


def test_readme_check_estimator_example_prints_what_the_readme_shows():
    """The second example (a researcher's own estimator through check_estimator): at most ten
    lines of code, and it prints exactly what the README shows; plain IPS passes, the capped one fails."""
    section = _section()
    blocks = re.findall(r"```python\n(.*?)```\s*```text\n(.*?)```", section, re.S)
    code, shown = next((c, s) for c, s in blocks if "check_estimator" in c)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README check_estimator example", "exec"), {})
    assert printed.getvalue() == shown
    reports = shown.split("check_estimator(")[1:]
    assert reports[0].rstrip().endswith("passed") and "FAILED" in reports[1]
