"""The README's Python example runs as written (in a temporary folder)."""

import re
from pathlib import Path

from tests.test_recipes import section

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    text = text.replace(section(text, "## Recipes"), "")  # tests/test_recipes.py runs those
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code.replace('device="auto"', 'device="cpu"'), "README.md", "exec"), {})
    assert (tmp_path / "runs" / "joint_seed0.json").exists()


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && pytest' in text and 'pip install -e ".[test]" && pytest' in ci
