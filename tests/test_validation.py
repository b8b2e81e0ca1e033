"""Configuration validation: every bad value is one line naming what is accepted.

RunConfig.resolve checks every value once, before anything runs.
"""

import re

import pytest

from continual import ContinualError, RunConfig
from continual.experiment import LIMITS, SEED_MAX


# ------------------------------------------------------------------ RunConfig.resolve
def test_every_numeric_field_has_a_limit_and_the_message_quotes_it():
    assert set(LIMITS) == {"epochs", "batch_size", "eval_batch_size", "num_experiences", "lr", "momentum",
                           "weight_decay", "seed"}
    for key, bad in (("epochs", 0), ("batch_size", -1), ("eval_batch_size", 0), ("num_experiences", 0),
                     ("lr", 0.0), ("lr", float("nan")), ("lr", 1e308), ("momentum", 1.0), ("momentum", -0.1),
                     ("weight_decay", -1.0), ("weight_decay", float("inf")), ("seed", -1), ("seed", SEED_MAX + 1)):
        with pytest.raises(ContinualError, match=f"^{key}=.* is out of range: expected {re.escape(str(LIMITS[key]))}$"):
            RunConfig(device="cpu", **{key: bad}).resolve()
    assert RunConfig(device="cpu", seed=SEED_MAX, momentum=0.99).resolve().seed == SEED_MAX


@pytest.mark.parametrize("values, message", [
    ({"num_experiences": "0"}, "num_experiences=0 is out of range: expected >= 1"),  # 0 used to mean the default
    ({"num_experiences": "11"}, "benchmark 'split-digits' has 10 classes, so expected 1..10"),
    ({"scenario": ""}, "no scenario ''; expected one of class, task"),
    ({"model": ""}, "unknown model ''; expected one of mlp"),
    ({"head": ""}, "unknown head ''; expected one of fixed"),
    ({"optimizer": ""}, "unknown optimizer ''; expected one of sgd, adam"),
    ({"label": ""}, "label='' is empty"),
    ({"pretrained": ""}, "pretrained='' is empty"),
    ({"class_order": "0,1,2"}, "class_order=[0, 1, 2] is not accepted; expected 'random' or a permutation of 0..9"),
    ({"benchmark": "permuted-digits", "class_order": "random"}, "class_order applies to split benchmarks only"),
    ({"device": "meta"}, "device 'meta' is not supported (type 'meta'); expected auto, cpu, cuda or cuda:N"),
    ({"device": "cuda:x"}, "unknown device 'cuda:x'"),
    ({"seed": "99999999999999999999"}, "seed=99999999999999999999 is out of range: expected in [0, 9223372036854775807]"),
    ({"momentum": "-1"}, "momentum=-1.0 is out of range: expected in [0, 1)"),
    ({"weight_decay": "-1"}, "weight_decay=-1.0 is out of range"),
    ({"lr": "1e308"}, "lr=1e+308 is out of range: expected in (0, 3.40282e+37]"),
    ({"strategy": "replay", "mem": "0"}, "replay.mem=0 is out of range: expected >= 1"),
    ({"strategy": "replay", "buffer": "fifo"}, "replay.buffer='fifo' is not accepted; expected one of reservoir"),
    ({"strategy": "ewc", "lam": "-1"}, "ewc.lam=-1.0 is out of range: expected >= 0"),
    ({"strategy": "ewc", "lam": "nan"}, "ewc.lam=nan is out of range"),
    ({"strategy": "ewc+mas", "mas.lam": "inf"}, "ewc+mas.mas.lam=inf is out of range"),
    ({"strategy": "lwf", "temperature": "0"}, "lwf.temperature=0.0 is out of range: expected > 0"),
    ({"strategy": "si", "xi": "0"}, "si.xi=0.0 is out of range: expected > 0"),
    ({"strategy": "der++", "alpha": "-0.5"}, "der++.alpha=-0.5 is out of range"),
])
def test_resolve_refuses_with_the_accepted_range(values, message):
    cfg = RunConfig(device="cpu").override(values)
    with pytest.raises(ContinualError) as err:
        cfg.resolve()
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("strategy", ["replay", "der++", "lwf", "ewc+replay", "cumulative"])
def test_a_head_masking_past_classes_is_refused_for_strategies_that_train_on_them(strategy):
    with pytest.raises(ContinualError, match=re.escape(f"masks past classes' logits in training, but strategy '{strategy}' trains on past classes")):
        RunConfig(strategy=strategy, head="incremental-mask-past", device="cpu").resolve()


@pytest.mark.parametrize("strategy", ["finetune", "ewc", "si", "mas", "l2", "joint"])
def test_a_head_masking_past_classes_is_accepted_otherwise(strategy):
    assert RunConfig(strategy=strategy, head="incremental-mask-past", device="cpu").resolve().head == "incremental-mask-past"


def test_resolve_is_idempotent_and_defaults_still_fill_in():
    r = RunConfig(device="cpu").resolve()
    assert (r.num_experiences, r.model, r.scenario, r.head) == (5, "mlp", "class", "incremental")
    assert r.resolve() == r


@pytest.mark.parametrize("benchmark", ["split-fmnist", "split-digits", "split-cifar10"])
def test_a_missing_data_root_is_refused_at_resolve_for_every_benchmark(benchmark, tmp_path):
    with pytest.raises(ContinualError, match=f"data root '{tmp_path}/missing' does not exist"):
        RunConfig(benchmark=benchmark, data_root=str(tmp_path / "missing"), device="cpu").resolve()
    (tmp_path / "afile").write_text("x")
    if benchmark == "split-cifar10":  # the archive itself may be named
        assert RunConfig(benchmark=benchmark, data_root=str(tmp_path / "afile"), device="cpu").resolve()
    assert RunConfig(benchmark=benchmark, data_root=str(tmp_path / "new"), download=True, device="cpu").resolve()


def test_ray_configs_leave_the_device_to_the_worker():
    cfg = RunConfig(device="cuda:3", data_root="/nowhere/on/this/machine")
    with pytest.raises(ContinualError, match="data root '/nowhere/on/this/machine' does not exist"):
        cfg.resolve()
    assert cfg.resolve(here=False).device == "cuda:3"
    with pytest.raises(ContinualError, match="not supported"):
        RunConfig(device="mps").resolve(here=False)  # the name is still checked
