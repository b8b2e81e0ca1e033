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
from continual.strategies import STRATEGIES, get_strategy
from continual.transfer import pretrain


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrained") / "digits01.pt"
    pretrain("split-digits", path, classes=[0, 1], epochs=1, device="cpu", seed=0)
    return str(path)


def whole_and_resumed(cfg: RunConfig, folder, *, crash_at: int = 2):
    """The result of ``cfg`` run without a break, and of the same run crashed at the start of
    experience ``crash_at`` (after the checkpoint of the one before) and started again in ``folder``."""

    def crash(event, info):
        if event == "experience_start" and info["index"] == crash_at:
            raise Crash

    whole = run(cfg)
    with pytest.raises(Crash) if get_strategy(cfg.strategy).schedule != "joint" else contextlib.nullcontext():
        run(cfg, callbacks=[crash], checkpoint_dir=folder)
    return whole, run(cfg, checkpoint_dir=folder)


def assert_same_run(resumed, whole) -> None:
    """Everything a run records but its timings: matrices, penalties, every plugin's report, the ledger."""
    assert resumed.acc_matrix == whole.acc_matrix and resumed.classifiers == whole.classifiers
    assert resumed.penalties == whole.penalties
    assert {k: v for k, v in resumed.extra.items() if k != "resumed"} == whole.extra


# Configurations beyond a strategy's defaults whose resume is worth its own check.
VARIANTS = [
    ("icarl", {"params": {"loss": "softmax-kd", "mem": 300}}),
    ("der", {"model": "convnet", "params": {"mem": 40}}),
    ("lucir", {"classifier": "both", "momentum": 0.9, "weight_decay": 5e-4}),
    ("replay+bic", {"params": {"bic_epochs": 30}}),
    ("bic+lwf", {"params": {"bic_epochs": 30}}),
]


@pytest.mark.parametrize("name, settings", [(n, {}) for n in sorted(STRATEGIES)] + VARIANTS,
                         ids=[n for n in sorted(STRATEGIES)] + [f"{n}-variant" for n, _ in VARIANTS])
def test_every_strategy_resumes_to_the_uninterrupted_run(name, settings, tmp_path, pretrained):
    cfg = RunConfig(strategy=name, epochs=1, num_experiences=4, device="cpu", seed=1,
                    pretrained=pretrained if get_strategy(name).needs_pretrained else None, **settings)
    whole, resumed = whole_and_resumed(cfg, tmp_path / "checkpoints")
    if get_strategy(name).schedule != "joint":  # joint trains once: there is no experience to crash in
        assert resumed.extra.get("resumed") is True
    assert_same_run(resumed, whole)


def test_a_class_il_run_with_both_classifiers_resumes_to_both_matrices(tmp_path):
    """B4 Inc2 with a fixed-total herding memory, bias correction and a step schedule; the NME
    matrix is restored from the checkpoint as well as the linear one."""
    cfg = RunConfig(strategy="replay+bic", split="B4-Inc2", classifier="both", epochs=2, lr_schedule="step", milestones=[1],
                    device="cpu", seed=2, params={"buffer": "class-balanced", "selection": "herding", "mem": 60, "bic_epochs": 5})
    whole, resumed = whole_and_resumed(cfg, tmp_path / "checkpoints")
    assert list(whole.classifiers) == ["nme"] and len(whole.acc_matrix) == 4
    assert_same_run(resumed, whole)
