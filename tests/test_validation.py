"""Configuration and argument validation: every bad value is one line, never a traceback.

The property tests feed generated argument lists (valid and odd names, numbers, ``--set`` keys
and values, class orders, paths, sweep files) to the CLI with training stubbed out: each ends in
success (the command reaches the point where it would train) or in a one-line error.
"""

import contextlib
import io
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continual import ContinualError, RunConfig
from continual.cli import main
from continual.experiment import LIMITS, SEED_MAX


class Reached(Exception):
    """Raised by the stubs where the real command would start training."""


def _stop(*args, **kwargs):
    raise Reached


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    """Training stubbed out, and odd things on disk: a file, a link to it, a folder, a broken link,
    a sweep file that is not UTF-8."""
    import continual.experiment
    import continual.sweep
    import continual.transfer

    monkeypatch.setattr(continual.experiment, "run", _stop)
    monkeypatch.setattr(continual.transfer, "pretrain", _stop)
    monkeypatch.setattr(continual.sweep, "run_sweep", _stop)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "alink").symlink_to(tmp_path / "afile")
    (tmp_path / "adir").mkdir()
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    (tmp_path / "binary.toml").write_bytes(b"out = \xff\xfe\n")
    return tmp_path


def outcome(argv):
    """``"reached"``, ``"ok"`` or the one error line; fails on a traceback or a multi-line error."""
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(argv)
    except Reached:
        return "reached"
    if code == 0:
        return "ok"
    lines = [line for line in err.getvalue().splitlines() if line.startswith("continual: error:")]
    assert code == 2 and len(lines) == 1, (argv, code, err.getvalue())
    assert err.getvalue().endswith(lines[0] + "\n"), (argv, err.getvalue())  # the error is the last line
    return lines[0]


# ------------------------------------------------------------------ generated arguments
NAMES = st.sampled_from([
    "", " ", "split-digits", "permuted-digits", "rotated-digits", "split-mnist", "split-cifar100-20", "nope",
    "finetune", "joint", "cumulative", "ewc", "online-ewc", "si", "replay", "der++", "lwf", "ewc+replay", "ewc+mas",
    "ewc+ewc", "replay+joint", "transfer", "finetune-pretrained", "class", "task", "domain", "mlp", "convnet",
    "resnet18", "fixed", "incremental", "incremental-mask-past", "multi", "sgd", "adam", "rmsprop", "cpu", "cpu:0",
    "cuda", "cuda:7", "meta", "mps", "xla", "hip", "xpu", "lazy", "privateuseone", "auto", "random", "herding",
    "reservoir", "exact", "é", "\udcff", "a" * 300, "-", "a=b",
])
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.sampled_from(["0", "-1", "1", "2", "5", "11", "1e308", "nan", "inf", "-inf", "1e-320", "0x10", "", "1_000",
                     "9223372036854775807", "9223372036854775808", "-9223372036854775809", "0.5", "3.5", "-0.0"]),
)
SEEDS = st.sampled_from(["0", "1", "2", "3", "-1", "10001", "99999999999", "", "x", "1.5"])
ORDERS = st.one_of(
    st.sampled_from(["random", "", ",", "1,1", "-1", "0,1", "9,8,7,6,5,4,3,2,1,0", "a,b", "0," * 10]),
    st.lists(st.integers(-2, 12), max_size=12).map(lambda labels: ",".join(map(str, labels))),
)
# "@" stands for the test's folder (tmp_path)
PATHS = st.sampled_from(["@out", "@afile", "@afile/sub", "@alink", "@adir", "@broken", "@" + "x" * 300,
                         "@" + "/".join(["d" * 200] * 25), "@adir/../afile", "", "/proc/continual-test"])
KEYS = st.sampled_from([
    "epochs", "lr", "batch_size", "num_experiences", "momentum", "weight_decay", "eval_batch_size", "seed",
    "benchmark", "strategy", "scenario", "model", "optimizer", "device", "label", "data_root", "head", "pretrained",
    "class_order", "download", "lam", "ewc.lam", "mas.lam", "mem", "alpha", "beta", "c", "xi", "gamma", "estimator",
    "buffer", "selection", "replay_batch", "temperature", "num_samples", "params.lam", "backbone_lr_scale", "", "nope",
])
SETS = st.tuples(KEYS, st.one_of(NAMES, NUMBERS, ORDERS, PATHS)).map(lambda kv: f"{kv[0]}={kv[1]}")
FLAG = st.just(None)


def mostly(valid, odd):
    """Valid values about half the time, so that generated command lines also reach the end."""
    return st.one_of(st.sampled_from(valid), odd)


INTS, FLOATS = mostly(["1", "2", "3"], NUMBERS), mostly(["0.01", "0.1", "0.5"], NUMBERS)
OUT = mostly(["@out", "@adir"], PATHS)
RUN = {
    "--benchmark": mostly(["split-digits", "permuted-digits", "rotated-digits"], NAMES),
    "--strategy": mostly(["finetune", "joint", "ewc", "replay", "lwf", "der++", "ewc+mas", "si+replay"], NAMES),
    "--scenario": mostly(["class", "task", "domain"], NAMES), "--num-experiences": INTS,
    "--class-order": ORDERS, "--model": mostly(["mlp", "convnet"], NAMES),
    "--head": mostly(["fixed", "incremental", "incremental-mask-past", "multi"], NAMES), "--pretrained": PATHS,
    "--seeds": SEEDS, "--seed": INTS, "--epochs": INTS, "--lr": FLOATS, "--batch-size": INTS,
    "--optimizer": mostly(["sgd", "adam"], NAMES), "--momentum": FLOATS, "--device": mostly(["cpu", "auto"], NAMES),
    "--set": SETS, "--label": NAMES, "--out": OUT, "--data-root": mostly(["@adir"], PATHS), "--download": FLAG,
    "--quiet": FLAG,
}
OPTIONS = {
    "run": RUN,
    "pretrain": {"--benchmark": RUN["--benchmark"], "--classes": ORDERS, "--model": RUN["--model"], "--epochs": INTS,
                 "--lr": FLOATS, "--batch-size": INTS, "--seed": INTS, "--device": RUN["--device"],
                 "--out": mostly(["@net.pt"], PATHS)},
    "demo": {"--out": OUT, "--seeds": SEEDS, "--device": RUN["--device"], "--quiet": FLAG},
    "compare": {"--out": OUT, "--band": st.sampled_from(["ci", "std", "none", "x"])},
    "plot": {"--out": OUT, "--band": st.sampled_from(["ci", "std", "none", "x"])},
    "sweep": {"--set": SETS, "--workers": SEEDS, "--engine": st.sampled_from(["local", "ray", "dask", ""]),
              "--address": st.sampled_from(["127.0.0.1:1", "nohost", ""]), "--dry-run": FLAG, "--quiet": FLAG},
}
TOML_VALUES = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.booleans(),
    NAMES.map(lambda s: s if "\udcff" not in s else "x"), ORDERS,
    st.lists(st.one_of(st.integers(-2, 12), st.floats(0, 1)), max_size=3),
)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    return json.dumps(value)


@st.composite
def sweep_files(draw):
    """A sweep file's text: out, seeds, a [base] table and a [strategies] table of odd values."""
    lines = []
    if draw(st.booleans()):
        lines.append(f"out = {json.dumps(draw(PATHS))}")
    if draw(st.booleans()):
        lines.append(f"seeds = {_toml(draw(st.one_of(st.integers(-2, 4), st.just(10**9), st.lists(st.integers(-2, 2**64), max_size=3))))}")
    lines.append("[base]")
    base = draw(st.dictionaries(KEYS.filter(lambda k: k and "." not in k), TOML_VALUES, max_size=3))
    lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in base.items()]
    lines.append("[strategies]")
    for name in draw(st.lists(NAMES.filter(lambda n: "\udcff" not in n), max_size=2)):
        grid = draw(st.dictionaries(KEYS.filter(lambda k: k and "." not in k), TOML_VALUES, max_size=2))
        lines.append(f"{json.dumps(name)} = {{{', '.join(f'{json.dumps(k)} = {_toml(v)}' for k, v in grid.items())}}}")
    return "\n".join(lines) + "\n"


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_command_lines_end_in_success_or_one_line(stubbed, data):
    command = data.draw(st.sampled_from(["run", "run", "run", "pretrain", "demo", "compare", "plot", "sweep", "list"]))
    argv = [command]
    if command == "sweep":
        choice = data.draw(st.sampled_from(["file", "file", "file", "@binary.toml", "@adir", "@missing.toml"]))
        (stubbed / "sweep.toml").unlink(missing_ok=True)
        if choice == "file":
            (stubbed / "sweep.toml").write_text(data.draw(sweep_files()))
            choice = "@sweep.toml"
        argv.append(choice)
    elif command in ("compare", "plot"):
        argv.append(data.draw(PATHS))
    for _ in range(data.draw(st.integers(0, 6)) if command in OPTIONS else 0):
        option = data.draw(st.sampled_from(sorted(OPTIONS[command])))
        value = data.draw(OPTIONS[command][option])
        argv += [option] if value is None else [option, value]
    prefix = str(stubbed) + "/"
    argv = [a.replace("@", prefix, 1) if a.startswith("@") else a for a in argv]
    sweep_file = stubbed / "sweep.toml"
    if sweep_file.exists():
        sweep_file.write_text(sweep_file.read_text().replace('"@', '"' + prefix))
    outcome(argv)


# ------------------------------------------------------------------ RunConfig.resolve
def test_list_settings_parse_or_name_the_bad_text():
    assert RunConfig().override({"increments": "3,2", "classes": "0,1,2,3,4"}).increments == [3, 2]
    with pytest.raises(ContinualError, match="^increments='3,x': expected whole numbers separated by commas, like 50,10,10$"):
        RunConfig().override({"increments": "3,x"})


def test_every_numeric_field_has_a_limit_and_the_message_quotes_it():
    assert set(LIMITS) == {"epochs", "batch_size", "eval_batch_size", "num_experiences", "lr", "momentum",
                           "weight_decay", "seed", "lr_decay"}
    for key, bad in (("lr_decay", 0.0), ("lr_decay", 1.5), ("epochs", 0), ("batch_size", -1), ("eval_batch_size", 0), ("num_experiences", 0),
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
    ({"class_order": "0,1,2"}, "class_order=[0, 1, 2] is not accepted; expected 'random' or 'icarl' or a permutation of 0..9"),
    ({"split": "B50-Inc10"}, "B50 Inc10 does not fit 10 classes"),
    ({"split": "50/10"}, "split='50/10' is not accepted; expected B<first>-Inc<increment>"),
    ({"increments": "3,3"}, r"increments=[3, 3] must be positive class counts summing to the 10 classes"),
    ({"split": "B4-Inc2", "increments": "4,6"}, "give split='B4-Inc2' or increments=[4, 6], not both"),
    ({"split": "B4-Inc2", "num_experiences": "5"}, r"num_experiences=5 does not match the cut into 4 experiences"),
    ({"classes": "0,0,1"}, r"classes=[0, 0, 1] must be distinct labels of 'split-digits' in 0..9"),
    ({"classes": "0,1,10"}, r"classes=[0, 1, 10] must be distinct labels"),
    ({"benchmark": "permuted-digits", "increments": "5,5"}, "increments applies to split benchmarks only"),
    ({"lr_schedule": "linear"}, "lr_schedule='linear' is not accepted; expected one of constant, step, cosine"),
    ({"lr_schedule": "step"}, "lr_schedule='step' needs milestones"),
    ({"lr_schedule": "step", "milestones": "0"}, r"milestones=[0] need lr_schedule='step' and must be epochs in 1..9"),
    ({"milestones": "3"}, r"milestones=[3] need lr_schedule='step'"),
    ({"classifier": "svm"}, "classifier='svm' is not accepted; expected one of linear, nme, both"),
    ({"classifier": "nme", "scenario": "task"}, "classifier='nme' needs the class-incremental scenario"),
    ({"strategy": "ncm", "pretrained": "p.pt", "classifier": "linear"}, "strategy 'ncm' trains no head and predicts with its own"),
    ({"strategy": "replay", "classifier": "ncm"}, "classifier='ncm' is not accepted; expected one of linear, nme, both"),
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


def test_set_seed_is_the_first_seed(monkeypatch, tmp_path):
    import continual.experiment

    seen = []

    def record(cfg, **kwargs):
        seen.append(cfg.seed)
        raise Reached

    monkeypatch.setattr(continual.experiment, "run", record)
    with pytest.raises(Reached):
        main(["run", "--set", "seed=7", "--seeds", "2", "--device", "cpu", "--out", str(tmp_path), "--quiet"])
    assert seen == [7]


def test_mlp_widths_and_unnormalised_inputs():
    from continual.experiment import build

    built = build(RunConfig(hidden=[32, 16], normalise=False, device="cpu"))
    assert [m.out_features for m in built.model.blocks()] == [32, 16]
    t = built.stream[0].transform
    assert t.mean == (0.0,) and t.std == (1.0,)
    x = built.stream[0].x_train[:4]
    assert float(t(x).max()) <= 1.0 and float(t(x).min()) >= 0.0  # pixels in [0, 1]
    with pytest.raises(ContinualError, match=r"^hidden=\[0\] must be a non-empty list of positive widths"):
        RunConfig(hidden=[0]).resolve()
    with pytest.raises(ContinualError, match=r"^hidden=\[64\] sets the widths of model 'mlp'; model 'convnet'"):
        RunConfig(model="convnet", hidden=[64]).resolve()
    assert RunConfig().override({"hidden": "256,256", "normalise": "false"}).hidden == [256, 256]
