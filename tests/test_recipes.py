"""The README's three recipes (feature extraction, fine-tuning, incremental learning) run as
written on the bundled digits, in a temporary folder, print their table, write a valid PNG and show
their point. The ImageNet variant (the commented line) is not trained (it downloads, and trains a
full ResNet-18 on 64x64 images): its configuration is built with a stand-in weights file in a
temporary torch cache, which checks the line is one a run accepts."""

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
UPDATE = 'base.update(model="resnet18-torchvision", pretrained="imagenet", download=True, resize=64)'
IMAGENET = '# ImageNet weights instead (downloads 45 MB once): ' + UPDATE


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (e.g. ``"## Recipes"``) up to the next heading of its level or
    above; lines inside fenced code blocks (``# comments``) are not headings."""
    level, lines, inside, fenced = heading.split()[0], [], False, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            if inside and len(line.split()[0]) <= len(level):
                break
            if line.rstrip("\n") == heading:
                inside = True
                continue
        if inside:
            lines.append(line)
    assert inside, f"README.md has no section {heading!r}"
    return "".join(lines)


def recipe(heading: str) -> str:
    """The one python block of the recipe under ``### heading``."""
    blocks = re.findall(r"```python\n(.*?)```", section(section(README.read_text(), "## Recipes"), f"### {heading}"), flags=re.S)
    assert len(blocks) == 1, f"recipe {heading!r} should have one python block, has {len(blocks)}"
    return blocks[0]


def run_recipe(heading: str, png: str, tmp_path, monkeypatch, capsys) -> tuple[dict, list[str]]:
    """Exec the recipe in ``tmp_path``; return its namespace and printed lines, after checking its PNG."""
    code = recipe(heading)
    assert code.count(IMAGENET) == 1 and len(code.splitlines()) <= 22, "a short block with the one ImageNet line"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, f"README.md ({heading})", "exec"), namespace)
    plt.close("all")
    path = tmp_path / png
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = plt.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300
    return namespace, capsys.readouterr().out.splitlines()


def percent(line: str) -> list[float]:
    return [float(v) / 100 for v in re.findall(r"(\d+\.\d)%", line)]


def test_feature_extraction(tmp_path, monkeypatch, capsys):
    ns, lines = run_recipe("Feature extraction", "feature_extraction.png", tmp_path, monkeypatch, capsys)
    accuracy = ns["accuracy"]
    assert list(accuracy) == ["pretraining, digits 5-9", "frozen backbone + new head, 0-4", "from scratch, 0-4"]
    assert [percent(line)[0] for line in lines[1:]] == pytest.approx(list(accuracy.values()), abs=5e-4)
    assert accuracy["pretraining, digits 5-9"] > 0.9
    assert accuracy["frozen backbone + new head, 0-4"] > 0.6  # frozen features from other digits: far above chance (20%)
    assert accuracy["from scratch, 0-4"] > 0.9
    assert ns["frozen"].config["strategy"] == "transfer" and ns["frozen"].config["pretrained"] == "digits59.pt"
    assert ns["frozen"].extra["head"]["sizes"] == [5]  # a new 5-class head


def test_fine_tuning(tmp_path, monkeypatch, capsys):
    ns, lines = run_recipe("Fine-tuning", "fine_tuning.png", tmp_path, monkeypatch, capsys)
    accuracy = ns["accuracy"]
    assert len(lines) == 6 and [percent(line)[0] for line in lines[1:]] == pytest.approx(list(accuracy.values()), abs=5e-4)
    head, last, scaled, full, scratch = accuracy.values()
    assert head > 0.7  # chance is 50%
    assert min(last, scaled, full) > 0.85 and max(last, scaled, full) > head  # fine-tuning beats the head alone
    assert max(last, scaled, full) > scratch + 0.2  # pretraining pays after one epoch


def test_incremental_learning(tmp_path, monkeypatch, capsys):
    ns, lines = run_recipe("Incremental learning", "incremental.png", tmp_path, monkeypatch, capsys)
    steps = ns["steps"]
    assert list(steps) == ["finetune", "lwf", "replay, 60 images"] and len(lines) == 4
    for name, line in zip(steps, lines[1:]):
        assert line.startswith(name) and percent(line)[:3] == pytest.approx(list(steps[name].values()), abs=5e-4)
    for name, acc in steps.items():
        assert acc["old classes, after step 1"] > 0.9 and acc["new classes, after step 2"] > 0.8, name
    finetune, replay = steps["finetune"], steps["replay, 60 images"]
    assert finetune["old classes, after step 2"] < 0.1  # forgotten
    assert replay["old classes, after step 2"] > 0.7  # kept by 60 stored images
    assert ns["r"].extra["head"]["sizes"] == [3, 5]  # the head grew from 3 to 5 classes


def test_the_imagenet_line_builds_with_the_weights_in_the_cache(torchvision, tmp_path, monkeypatch):
    """The recipes' ImageNet line, applied to recipe (a)'s settings, builds a run that loads the
    (stand-in) cached ImageNet weights, adapts the digits to them and caches 512 features."""
    from continual.experiment import RunConfig, build
    from tests.test_torchvision_weights import write_weights

    code = recipe("Feature extraction")
    base_line = next(line for line in code.splitlines() if line.startswith("base = dict("))
    namespace: dict = {}
    exec(base_line, namespace)
    exec(UPDATE, namespace)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    write_weights(torchvision, "resnet18-torchvision", tmp_path / "home")
    built = build(RunConfig(strategy="transfer", **{**namespace["base"], "download": False}))
    assert built.records["pretrained"]["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert built.records["input"].startswith("grey -> 3 channels, resized 8x8 -> 64x64")
    assert built.stream[0].x_train.shape[1] == 512
