import pytest

from continual import ContinualError, RunConfig, Strategy, get_strategy
from continual.strategies import STRATEGIES, coerce, register


def test_registry_has_the_baselines():
    assert {"finetune", "joint", "cumulative"} <= set(STRATEGIES)
    assert get_strategy("joint").schedule == "joint"
    with pytest.raises(ContinualError, match="unknown strategy 'nope'"):
        get_strategy("nope")
    with pytest.raises(ContinualError, match="already registered"):
        register(Strategy("finetune", "again"))


def test_typed_params():
    s = Strategy("toy", "test only", defaults={"lam": 1.0, "mem": 10, "online": False, "kind": "a"})
    p = s.params({"lam": "2.5", "mem": "20", "online": "yes", "kind": "b"})
    assert p == {"lam": 2.5, "mem": 20, "online": True, "kind": "b"}
    with pytest.raises(ContinualError, match="no parameter 'gamma'; accepted: kind, lam, mem, online"):
        s.params({"gamma": 1})
    with pytest.raises(ContinualError, match=r"toy.mem='lots' is not a valid int"):
        s.params({"mem": "lots"})
    with pytest.raises(ContinualError, match="is not a valid bool"):
        coerce("maybe", bool, "x")
    with pytest.raises(ContinualError, match="is not a valid int"):
        coerce(2.5, int, "x")
    with pytest.raises(ContinualError, match="schedule"):
        Strategy("bad", "x", schedule="sometimes")


def test_config_override_and_resolve():
    cfg = RunConfig().override({"epochs": "3", "lr": "0.5", "strategy": "joint", "seed": 7})
    assert (cfg.epochs, cfg.lr, cfg.strategy, cfg.seed) == (3, 0.5, "joint", 7)
    r = cfg.resolve()
    assert r.model == "mlp" and r.batch_size == 32 and r.scenario == "class" and r.num_experiences == 5
    with pytest.raises(ContinualError, match="unknown setting 'epoch'; accepted: .*epochs"):
        RunConfig().override({"epoch": 3})
    with pytest.raises(ContinualError, match="unknown benchmark"):
        RunConfig(benchmark="nope").resolve()
