"""papers/: the reproduction scripts' shared command line (continual.papers), each script's --smoke run
(default suite), and each --check that can run on this machine (marked slow: pytest -m slow)."""

import importlib.util
import os
from pathlib import Path

import pytest

from continual.errors import ContinualError
from continual.papers import BEGIN, END, Outcome, Row, default_band, table, write_readme

PAPERS = Path(__file__).resolve().parent.parent / "papers"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
FOLDERS = ["sfr2024-split-fmnist", "buzzega2020-rethinking-er"]  # on Fashion-MNIST: their --check runs here (slow)
ELSEWHERE = ["vandeven2019-three-scenarios", "zhou2024-cil-survey"]  # data not on this machine: --smoke only


def load(folder: str):
    spec = importlib.util.spec_from_file_location(f"paper_{folder.replace('-', '_')}", PAPERS / folder / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bands_statuses_and_the_table():
    row = Row("DER", {}, published=82.03, spread=0.57, band=default_band(82.03, 0.57))
    assert row.band == (80.03, 84.03)
    assert Outcome(row, [81.0, 82.0]).status == "within band" and Outcome(row, [79.0, 80.0]).status == "outside band"
    assert Outcome(row, []).status == "not run" and Outcome(row, [10.0], smoke=True).status.startswith("smoke")
    explained = Row("Joint", {}, published=84.47, band=(82.47, 86.47), explained="a known difference")
    assert Outcome(explained, [81.9]).status == "outside band (explained: see the README)"
    text = table([Outcome(row, [81.0, 82.0, 83.0])], seeds=[0, 1, 2])
    assert "| DER | 82.03 ± 0.57 (std) | 82.00 ± 2.48 | [80.03, 84.03] | within band |" in text  # t(0.975, 2) * 1 / sqrt(3)


def test_row_names_and_bands_are_checked():
    with pytest.raises(ContinualError, match="without ','"):
        Row("ER, buffer 200", {}, published=72.54)
    with pytest.raises(ContinualError, match="low <= high"):
        Row("ER", {}, published=72.54, band=(74.0, 70.0))


def test_the_readme_table_is_written_between_its_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# paper\n\nbefore\n{BEGIN}\nold\n{END}\nafter\n")
    write_readme(readme, "| new |")
    assert readme.read_text() == f"# paper\n\nbefore\n{BEGIN}\n| new |\n{END}\nafter\n"
    (tmp_path / "bare.md").write_text("no markers")
    with pytest.raises(ContinualError, match="no <!-- results --> ... <!-- /results --> markers"):
        write_readme(tmp_path / "bare.md", "x")


@pytest.mark.parametrize("folder", FOLDERS + ELSEWHERE)
def test_each_script_runs_end_to_end_on_generated_data(folder, capsys):
    module = load(folder)
    assert module.main(module.ROWS, title=module.TITLE, folder=PAPERS / folder, seeds=module.SEEDS, argv=["--smoke", "--seeds", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    for row in module.ROWS:
        assert f"| {row.name} |" in out
    assert "smoke run (generated data)" in out


def test_each_readme_shows_the_scripts_bands():
    for folder in FOLDERS + ELSEWHERE:
        readme = (PAPERS / folder / "README.md").read_text()
        for row in load(folder).ROWS:
            if row.band:
                assert f"[{row.band[0]:.2f}, {row.band[1]:.2f}]" in readme, (folder, row.name)


def test_rows_of_one_configuration_share_one_run_and_smoke_keeps_two_cifar100_experiences(tmp_path, monkeypatch):
    from continual import experiment
    from continual.papers import run_rows, smoke_config

    calls = []
    real = experiment.run
    monkeypatch.setattr(experiment, "run", lambda cfg: calls.append(cfg) or real(cfg))
    config = dict(benchmark="split-digits", scenario="class", strategy="finetune", epochs=1)
    rows = [Row("FT (last)", config, published=None, metric="last_accuracy"),
            Row("FT (avg inc)", config, published=None, metric="average_incremental_accuracy")]
    outcomes = run_rows(rows, seeds=[0], out=tmp_path, quiet=True, device="cpu")
    assert len(calls) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["00-ft--last_seed0.json", "01-ft--avg-inc_seed0.json"]
    assert outcomes[0].values != outcomes[1].values
    small = smoke_config(dict(benchmark="split-cifar100", split="B0-Inc10", class_order="icarl"))
    assert small["classes"] == list(range(20)) and small["num_experiences"] == 2 and "split" not in small
    assert "classes" not in smoke_config(dict(benchmark="split-fmnist"))


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.is_dir(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
@pytest.mark.parametrize("folder", FOLDERS)
def test_fashion_mnist_reproductions_pass_their_check(folder, tmp_path):
    """Runs the whole reproduction again into a temporary folder (minutes: see papers/README.md)."""
    module = load(folder)
    assert module.main(module.ROWS, title=module.TITLE, folder=PAPERS / folder, seeds=module.SEEDS,
                       argv=["--check", "--quiet", "--out", str(tmp_path)]) == 0
