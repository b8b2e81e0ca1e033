"""Behaviour on the bundled split-digits benchmark (class-incremental, fixed seeds)."""

import pytest

from continual import RunConfig, run


@pytest.fixture(scope="module")
def results():
    out = {}
    for strategy in ("finetune", "joint", "cumulative"):
        out[strategy] = [run(RunConfig(strategy=strategy, scenario="class", device="cpu", seed=s)) for s in (0, 1)]
    return out


def mean(rs, key):
    return sum(r.metrics[key] for r in rs) / len(rs)


def test_finetune_forgets(results):
    assert mean(results["finetune"], "average_forgetting") > 0.5
    # Class-incremental fine-tuning ends near 1/T: only the last experience's classes are predicted.
    assert mean(results["finetune"], "final_average_accuracy") < 0.3


def test_joint_beats_finetune_by_a_wide_margin(results):
    assert mean(results["joint"], "final_average_accuracy") > mean(results["finetune"], "final_average_accuracy") + 0.5
    assert mean(results["joint"], "final_average_accuracy") > 0.85


def test_cumulative_forgets_little(results):
    assert mean(results["cumulative"], "average_forgetting") < 0.1
    assert mean(results["cumulative"], "final_average_accuracy") > 0.85
