"""Class-incremental behaviour: every method of the baseline table above fine-tuning (split-digits,
bundled), and bias correction and the nearest-mean classifier on Fashion-MNIST (issue 13).

The protocol of ``sweeps/class_il_fmnist.toml`` (split-fmnist 5 x 2, MLP, 1 epoch, batch 10, SGD
lr 0.03, a class-balanced herding memory of 200 exemplars), seed 0. Over 3 seeds (README table)
replay's linear head ends at 75.0 +- 3.2% last accuracy, replay + BiC at 79.5 +- 0.6% and replay's
NME at 79.2 +- 0.4%; the margins asserted here (2 points) are less than half of seed 0's (4.8 and 4.5).
Weight aligning does not help in this protocol (its premise, new rows with larger norms, fails:
see the README), so nothing is asserted of it.

Needs Debian's dataset-fashion-mnist (``apt-get install dataset-fashion-mnist``); skipped without it.
"""

from pathlib import Path

import pytest

from continual import RunConfig, run

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
MEMORY = {"buffer": "class-balanced", "selection": "herding", "mem": 200}

needs_fashion = pytest.mark.skipif(not FASHION.exists(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")

# Last accuracy on split-digits (class-incremental, the benchmark's defaults, memory 200), seeds 0 and 1
# when this was written: fine-tune 0.19 and 0.19; A-GEM 0.37 and 0.33 (weak in class-incremental
# learning, as known); ER, DER++, ER-ACE, iCaRL, LUCIR, GDumb and DER 0.75 to 0.94.
METHODS = {"replay": {"mem": 200}, "der++": {"mem": 200}, "er-ace": {"mem": 200}, "icarl": {"mem": 200},
           "lucir": {"mem": 200, "mem_per_class": 0}, "gdumb": {"mem": 200}, "der": {"mem": 200}, "a-gem": {"mem": 200}}


def test_every_method_ends_clearly_above_finetuning_on_split_digits():
    finetune = run(RunConfig(strategy="finetune", device="cpu", seed=0)).metrics["last_accuracy"]
    for name, params in METHODS.items():
        last = run(RunConfig(strategy=name, params=params, device="cpu", seed=0)).metrics["last_accuracy"]
        assert last > finetune + (0.1 if name == "a-gem" else 0.4), (name, last, finetune)


@pytest.fixture(scope="module")
def runs():
    return {name: run(RunConfig(benchmark="split-fmnist", strategy=name, classifier="both", params=MEMORY, device="cpu", seed=0))
            for name in ("replay", "replay+bic")}


@needs_fashion
def test_bic_ends_above_replay_alone(runs):
    assert runs["replay+bic"].metrics["last_accuracy"] > runs["replay"].metrics["last_accuracy"] + 0.02
    assert runs["replay+bic"].metrics["average_incremental_accuracy"] > runs["replay"].metrics["average_incremental_accuracy"]
    alphas = runs["replay+bic"].extra["bic"]["alpha"]
    assert alphas[0] == 1.0 and all(a < 1.0 for a in alphas[1:])  # the new classes' logits are scaled down


@needs_fashion
def test_nme_ends_above_the_linear_head_for_replay(runs):
    nme = runs["replay"].classifiers["nme"]["metrics"]
    assert nme["last_accuracy"] > runs["replay"].metrics["last_accuracy"] + 0.02
    assert nme["average_forgetting"] < runs["replay"].metrics["average_forgetting"]
