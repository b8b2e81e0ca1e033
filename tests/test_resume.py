"""Every registered strategy resumes after a crash to the accuracy matrix of an uninterrupted run.

The list is read from the registry when the tests are collected, so a strategy added later is
covered without touching this file. A crash is an exception raised at the start of the third
experience, after the second experience's checkpoint was written; the same configuration is then
run again in the same folder, with new plugins and a new model, as a restarted process would.
(tests/test_sweep.py kills a real process with SIGKILL for a few strategies.)
"""

import contextlib

import pytest

import continual  # noqa: F401  (registers every strategy)
from continual import RunConfig, run
from continual.strategies import STRATEGIES
from continual.transfer import pretrain


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrained") / "digits01.pt"
    pretrain("split-digits", path, classes=[0, 1], epochs=1, device="cpu", seed=0)
    return str(path)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_resumes_to_the_uninterrupted_matrix(name, tmp_path, pretrained):
    cfg = RunConfig(strategy=name, epochs=1, num_experiences=4, device="cpu", seed=1,
                    pretrained=pretrained if STRATEGIES[name].needs_pretrained else None)
    whole = run(cfg)

    def crash(event, info):
        if event == "experience_start" and info["index"] == 2:
            raise Crash

    folder = tmp_path / "checkpoints"
    with pytest.raises(Crash) if STRATEGIES[name].schedule != "joint" else contextlib.nullcontext():
        run(cfg, callbacks=[crash], checkpoint_dir=folder)
    resumed = run(cfg, checkpoint_dir=folder)
    if STRATEGIES[name].schedule != "joint":  # joint trains once: there is no experience to crash in
        assert resumed.extra.get("resumed") is True
    assert resumed.acc_matrix == whole.acc_matrix
    assert resumed.penalties == whole.penalties


def test_a_class_il_run_with_both_classifiers_resumes_to_both_matrices(tmp_path):
    """B4 Inc2 with a fixed-total herding memory, bias correction and a step schedule; the NME
    matrix is restored from the checkpoint as well as the linear one."""
    cfg = RunConfig(strategy="replay+bic", split="B4-Inc2", classifier="both", epochs=2, lr_schedule="step", milestones=[1],
                    device="cpu", seed=2, params={"buffer": "class-balanced", "selection": "herding", "mem": 60, "bic_epochs": 5})
    whole = run(cfg)
    assert list(whole.classifiers) == ["nme"] and len(whole.acc_matrix) == 4

    def crash(event, info):
        if event == "experience_start" and info["index"] == 2:
            raise Crash

    folder = tmp_path / "checkpoints"
    with pytest.raises(Crash):
        run(cfg, callbacks=[crash], checkpoint_dir=folder)
    resumed = run(cfg, checkpoint_dir=folder)
    assert resumed.acc_matrix == whole.acc_matrix and resumed.classifiers == whole.classifiers
    assert resumed.extra["bic"] == whole.extra["bic"] and resumed.extra["by_step"] == whole.extra["by_step"]
