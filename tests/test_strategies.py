import re

import pytest

from continual import ContinualError, RunConfig, Strategy, get_strategy, run
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
        r = run(RunConfig(strategy="toy-a+toy-b", epochs=1, device="cpu", params={"beta": 5}))
        reports = {k: v for k, v in r.extra.items() if k not in ("memory", "by_step")}  # the run's own records beside them
        assert reports == {"head": {"sizes": [2, 4, 6, 8, 10]}, "a": {"value": 1.0}, "b": {"value": 5}}  # plugins' reports land in the results
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


def test_limits_are_checked_with_the_parameters_and_compose_by_part():
    from continual.strategies import Range

    s = Strategy("toy-limits", "test only", defaults={"lam": 1.0, "mem": 10, "kind": "a"},
                 limits={"lam": Range(0), "mem": Range(1, 100), "kind": ("a", "b")})
    assert s.params({"lam": "0", "mem": "100", "kind": "b"}) == {"lam": 0.0, "mem": 100, "kind": "b"}
    for values, message in (({"lam": "-1"}, "toy-limits.lam=-1.0 is out of range: expected >= 0"),
                            ({"mem": "101"}, "toy-limits.mem=101 is out of range: expected in [1, 100]"),
                            ({"kind": "c"}, "toy-limits.kind='c' is not accepted; expected one of a, b")):
        with pytest.raises(ContinualError, match=re.escape(message)):
            s.params(values)
    free = Strategy("toy-free", "test only", defaults={"x": 1.0})
    with pytest.raises(ContinualError, match="toy-free.x=inf must be a finite number"):
        free.params({"x": "inf"})  # a float without limits must still be finite
    with pytest.raises(ContinualError, match="limits for nope, which are not among its parameters"):
        Strategy("toy-bad", "x", defaults={"lam": 1.0}, limits={"nope": Range(0)})
    both = get_strategy("ewc+mas")
    assert set(both.limits) >= {"ewc.lam", "mas.lam", "estimator"} and not both.past_classes
    with pytest.raises(ContinualError, match=re.escape("ewc+mas.mas.lam=-1.0 is out of range: expected >= 0")):
        both.params({"mas.lam": -1})
    assert get_strategy("ewc+replay").past_classes and get_strategy("cumulative").past_classes
    assert not get_strategy("joint").past_classes


def test_every_registered_number_has_a_limit():
    """A strategy's numeric hyperparameters all have a range (checked at resolve, before a run)."""
    for name, strategy in STRATEGIES.items():
        if name.startswith("toy"):
            continue
        for key, value in strategy.defaults.items():
            assert key in strategy.limits, f"{name}.{key} has no limit"
            assert strategy.params({key: value})[key] == value  # the default itself is accepted


def test_a_plugin_may_not_take_the_name_of_a_run_record():
    s = register(Strategy("toy-memory", "x", make_plugins=lambda p, c: [Tag("memory", 1)]))
    try:
        with pytest.raises(ContinualError, match="a plugin named 'memory' would overwrite the run's own record"):
            run(RunConfig(strategy="toy-memory", epochs=1, device="cpu"))
    finally:
        del STRATEGIES[s.name]


@pytest.mark.parametrize("name, message", [
    ("icarl+er-ace", "icarl and er-ace each replace the training loss; combine at most one of them"),
    ("gdumb+ewc", "gdumb trains a new model on its memory alone before each evaluation"),
    ("replay+gdumb", "it does not combine with other strategies"),
    ("lwf+bic", "'bic' must come before 'lwf'; write bic+lwf"),
])
def test_combinations_that_make_no_sense_are_refused_in_one_line(name, message):
    with pytest.raises(ContinualError, match=f"^cannot combine {re.escape(name)}: .*{re.escape(message)}"):
        get_strategy(name)
    assert get_strategy("der+wa").name == "der+wa" and get_strategy("icarl+ewc").replaces_loss
