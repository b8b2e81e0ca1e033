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


class Tag:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def report(self):
        return {"value": self.value}


def test_composition_runs_both_parts_plugin_sets():
    a = register(Strategy("toy-a", "x", defaults={"alpha": 1.0}, make_plugins=lambda p, c: [Tag("a", p["alpha"])]))
    b = register(Strategy("toy-b", "y", defaults={"beta": 2}, make_plugins=lambda p, c: [Tag("b", p["beta"])]))
    try:
        both = get_strategy("toy-a+toy-b")
        assert both.name == "toy-a+toy-b" and both.defaults == {"alpha": 1.0, "beta": 2}
        plugins = both.make_plugins(both.params({"alpha": "3", "beta": "4"}), None)
        assert [(p.name, p.value) for p in plugins] == [("a", 3.0), ("b", 4)]
        from continual import run
        r = run(RunConfig(strategy="toy-a+toy-b", epochs=1, device="cpu", params={"beta": 5}))
        assert r.extra == {"head": {"sizes": [2, 4, 6, 8, 10]}, "a": {"value": 1.0}, "b": {"value": 5}}  # plugins' reports land in the results
        with pytest.raises(ContinualError, match="only sequential strategies combine"):
            get_strategy("toy-a+joint")
        with pytest.raises(ContinualError, match="unknown strategy 'nope'"):
            get_strategy("toy-a+nope")
    finally:
        del STRATEGIES[a.name], STRATEGIES[b.name]


def test_composition_namespaces_shared_hyperparameters():
    both = get_strategy("ewc+mas")
    assert {"ewc.lam", "mas.lam"} <= set(both.defaults) and "lam" not in both.defaults
    import torch

    from continual.strategies import Context

    plugins = both.make_plugins(both.params({"ewc.lam": "10", "mas.lam": "0.5"}), Context(None, torch.device("cpu"), 0))
    assert [type(p).__name__ for p in plugins] == ["EWC", "MAS"]
    assert (plugins[0].lam, plugins[1].lam) == (10.0, 0.5)
    cfg = RunConfig(strategy="ewc+mas").override({"mas.lam": "2"}).resolve()
    assert cfg.params["mas.lam"] == 2.0 and cfg.params["ewc.lam"] == both.defaults["ewc.lam"]
    with pytest.raises(ContinualError, match="appears twice"):
        get_strategy("ewc+ewc")
