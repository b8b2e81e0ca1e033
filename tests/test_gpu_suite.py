"""``benchmarks/gpu.py``: the GPU suite's dry run (every part on the CPU, tiny sizes) and its refusal without CUDA."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
GPU = ROOT / "benchmarks" / "gpu.py"
PARTS = ("overhead", "replay", "regularizers", "heads", "data", "vs_avalanche", "batched", "features", "methods",
         "online", "pytest -m gpu")


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [e.get("PYTHONPATH")])])
    return e


def load_gpu():
    sys.path.insert(0, str(GPU.parent))
    try:
        import gpu
    finally:
        sys.path.remove(str(GPU.parent))
    return gpu


def fashion_mnist_installed():
    return load_gpu().fashion_mnist_installed()


def test_a_failed_write_leaves_the_old_report_whole(tmp_path, monkeypatch):
    gpu = load_gpu()
    report = tmp_path / "gpu-report.md"
    gpu.write_atomically(report, "old\n")
    assert report.read_text() == "old\n"

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(gpu.os, "replace", fail)
    with pytest.raises(OSError):
        gpu.write_atomically(report, "new\n")
    assert report.read_text() == "old\n"
    assert [f.name for f in tmp_path.iterdir()] == ["gpu-report.md"]  # no temporary file left behind


def test_fence_is_not_closed_by_the_text_inside():
    assert load_gpu().fence("a ``` b") == "````\na ``` b\n````"


def test_dry_run_runs_every_part(tmp_path):
    report = tmp_path / "report.md"
    r = subprocess.run([sys.executable, str(GPU), "--dry-run", "--report", str(report)], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    text = report.read_text()
    assert "device: cpu (dry run" in text and f"torch {torch.__version__}" in text
    assert re.search(r"## Failures\n\nnone\n", text)
    statuses = dict(re.findall(r"^\| (.+?) \| (.+?) \| [\d.]+ \|$", text, flags=re.M))
    assert tuple(statuses) == PARTS
    for name, status in statuses.items():
        if name == "vs_avalanche" and not fashion_mnist_installed():
            assert status.startswith("skipped: Fashion-MNIST is not installed")
        else:
            assert status == "ok", (name, status)
        assert f"\n## {name}\n" in text
    assert "- command: `python benchmarks/overhead.py --device cpu" in text
    assert "median ratio library / bare loop" in text  # a part's figures, verbatim
    assert not list(tmp_path.glob(".report.md.*"))  # the temporary file was renamed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_exits_2_with_one_line(tmp_path):
    report = tmp_path / "report.md"
    r = subprocess.run([sys.executable, str(GPU), "--report", str(report)], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--dry-run" in lines[0]
    assert not report.exists()
