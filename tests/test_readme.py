"""The README's Python example runs as written (in a temporary folder)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code.replace('device="auto"', 'device="cpu"'), "README.md", "exec"), {})
    assert (tmp_path / "runs" / "joint_seed0.json").exists()


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && pytest' in text and 'pip install -e ".[test]" && pytest' in ci
