"""Validation splits (continual.validation): the hold-out, its runs, resume, sweeps and compare."""

import json
import math

import numpy as np
import pytest
import torch

from continual import ContinualError, RunConfig, load_result, run, save_result
from continual.cli import main
from continual.data import Transform
from continual.experiment import build
from continual.metrics import summary
from continual.results import Result, config_id, result_from_dict, summarize
from continual.streams import Experience, Stream
from continual.validation import check_fraction, held_out_count, holdout_indices, rank_rows, split_stream
from tests.test_resume import whole_and_resumed

FAST = {"benchmark": "split-digits", "strategy": "finetune", "epochs": 1, "device": "cpu"}


def id_stream(class_sizes_per_experience, *, test_per_class=3):
    """A stream whose every sample's input is its own id (training ids from 0, test ids from 10**6)."""
    experiences, next_train, next_test = [], 0, 10**6
    for i, sizes in enumerate(class_sizes_per_experience):
        y = torch.tensor([c for c, n in sizes.items() for _ in range(n)])
        yt = torch.tensor([c for c in sizes for _ in range(test_per_class)])
        x = torch.arange(next_train, next_train + len(y)).float()[:, None]
        xt = torch.arange(next_test, next_test + len(yt)).float()[:, None]
        next_train, next_test = next_train + len(y), next_test + len(yt)
        experiences.append(Experience(index=i, classes=tuple(sorted(sizes)), task_id=i, x_train=x, y_train=y,
                                      t_train=torch.full_like(y, i), x_test=xt, y_test=yt, t_test=torch.full_like(yt, i),
                                      transform=Transform()))
    classes = sorted({c for sizes in class_sizes_per_experience for c in sizes})
    return Stream(experiences, name="ids", scenario="class", num_classes=len(classes))


UNEVEN = [{0: 1, 1: 2, 2: 5}, {3: 13, 4: 100}, {5: 7, 6: 8, 7: 40}]


def ids(x):
    return set(x[:, 0].long().tolist())


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.9])
def test_hold_out_partitions_the_training_split_and_leaves_the_test_split(fraction):
    stream = id_stream(UNEVEN)
    train, val = split_stream(stream, fraction, seed=3)
    assert len(train) == len(val) == len(stream)
    for e, t, v in zip(stream, train, val):
        kept, held, test = ids(t.x_train), ids(v.x_test), ids(e.x_test)
        assert kept.isdisjoint(held) and len(kept) == t.num_train and len(held) == v.num_test  # no index twice
        assert kept | held == ids(e.x_train)  # union: the original training split
        assert held.isdisjoint(test) and ids(t.x_test) == test and torch.equal(t.y_test, e.y_test)  # test split unchanged
        assert v.num_train == 0 and v.index == e.index and v.classes == e.classes and v.task_id == e.task_id
        # labels and task ids travel with their inputs
        for part_x, part_y, part_t in ((t.x_train, t.y_train, t.t_train), (v.x_test, v.y_test, v.t_test)):
            source = {int(s): (int(c), int(k)) for s, c, k in zip(e.x_train[:, 0], e.y_train, e.t_train)}
            assert all(source[int(s)] == (int(c), int(k)) for s, c, k in zip(part_x[:, 0], part_y, part_t))
        assert torch.all(t.x_train[1:, 0] > t.x_train[:-1, 0])  # kept samples stay in their order


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.9])
def test_hold_out_is_class_stratified_as_documented(fraction):
    train, val = split_stream(id_stream(UNEVEN), fraction, seed=0)
    for sizes, t, v in zip(UNEVEN, train, val):
        for c, n in sizes.items():
            expected = 0 if n < 2 else min(n - 1, max(1, math.floor(fraction * n + 0.5)))
            assert int((v.y_test == c).sum()) == expected == held_out_count(n, fraction)
            assert int((t.y_train == c).sum()) == n - expected >= 1  # every class keeps a training sample
    # the figures the docstring quotes
    assert [held_out_count(n, 0.2) for n in (1, 2, 5, 7, 8, 100)] == [0, 1, 1, 1, 2, 20]


def test_hold_out_is_seeded():
    stream = id_stream(UNEVEN)
    held = lambda seed: [ids(v.x_test) for v in split_stream(stream, 0.3, seed=seed)[1]]  # noqa: E731
    assert held(5) == held(5)
    assert held(5) != held(6)
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    y = torch.tensor([0] * 50 + [1] * 50)
    a, b = holdout_indices(y, 0.2, rng()), holdout_indices(y, 0.2, rng())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_an_experience_with_nothing_to_hold_out_is_refused():
    with pytest.raises(ContinualError, match="experience 0 has 2 training samples, no class with two or more"):
        split_stream(id_stream([{0: 1, 1: 1}]), 0.5, seed=0)


@pytest.mark.parametrize("value", [-0.1, 1, 1.0, 1.5, math.nan, math.inf, True, "0.2"])
def test_fraction_out_of_range_is_a_one_line_error(value):
    with pytest.raises(ContinualError) as err:
        RunConfig(**FAST, validation=value).resolve()
    text = str(err.value)
    assert text.startswith(f"validation={value!r} is out of range: expected 0 (no validation split) or a fraction 0 < F < 1")
    assert "\n" not in text
    assert check_fraction(0) == 0.0 and RunConfig(**FAST).override({"validation": "0.25"}).validation == 0.25


def test_validation_keeps_old_config_ids_and_is_part_of_the_identity():
    cfg = RunConfig(**FAST).resolve().to_dict()
    old = {k: v for k, v in cfg.items() if k != "validation"}  # a config written before the field existed
    assert config_id(cfg) == config_id(old)
    assert config_id({**cfg, "validation": 0.2}) != config_id(cfg)


def test_the_run_trains_without_the_held_out_samples():
    plain, held = build(RunConfig(**FAST)), build(RunConfig(**FAST, validation=0.2))
    for e, t, v in zip(plain.stream, held.stream, held.validation):
        assert t.num_train + v.num_test == e.num_train and t.num_test == e.num_test
        assert held.trainer.model is held.model


@pytest.fixture(scope="module")
def validated():
    return run(RunConfig(**FAST, validation=0.2))


def test_a_run_records_both_matrices_and_loads_back(validated, tmp_path):
    r = validated
    T = len(r.acc_matrix)
    V = np.asarray(r.validation["acc_matrix"])
    assert T == 5 and V.shape == (T, T) and not np.isnan(V).any() and len(r.validation["random_init"]) == T
    assert r.validation["fraction"] == 0.2 and len(r.validation["sizes"]) == T and all(n > 0 for n in r.validation["sizes"])
    assert r.validation["metrics"]["final_average_accuracy"] == pytest.approx(V[-1].mean())
    assert r.validation["metrics"] == summary(V, r.validation["random_init"], test_sizes=r.validation["sizes"])
    assert np.diag(V).min() > 0.5  # the model learns each experience: its held-out samples are recognised
    back = load_result(save_result(r, tmp_path / "r.json"))
    assert back.validation == json.loads(json.dumps(r.validation)) and back.acc_matrix == r.acc_matrix


def test_joint_has_equal_validation_rows():
    r = run(RunConfig(**{**FAST, "strategy": "joint"}, validation=0.2))
    V = np.asarray(r.validation["acc_matrix"])
    assert V.shape == (5, 5) and (V == V[0]).all() and V[0].min() > 0


def test_old_results_without_validation_load_and_bad_entries_are_refused(validated):
    obj = validated.to_dict()
    old = {k: v for k, v in obj.items() if k != "validation"}
    assert result_from_dict(old).validation == {}
    bad = {**obj, "validation": {**obj["validation"], "acc_matrix": [[0.5]]}}
    with pytest.raises(ContinualError, match="'validation.acc_matrix' must be a 5 x 5 list of lists"):
        result_from_dict(bad)
    with pytest.raises(ContinualError, match="'validation.sizes' must be a list of 5 counts"):
        result_from_dict({**obj, "validation": {**obj["validation"], "sizes": [1, 2]}})
    with pytest.raises(ContinualError, match="'validation' must be an object"):
        result_from_dict({**obj, "validation": [1]})


@pytest.mark.parametrize("strategy", ["finetune", "replay"])
def test_a_resumed_run_ends_with_the_identical_validation_matrix(strategy, tmp_path):
    cfg = RunConfig(**{**FAST, "strategy": strategy}, validation=0.2)
    whole, resumed = whole_and_resumed(cfg, tmp_path, crash_at=3)
    assert resumed.extra.get("resumed") and resumed.acc_matrix == whole.acc_matrix
    assert resumed.validation == whole.validation


def test_a_checkpoint_without_the_validation_matrix_is_passed_over(tmp_path):
    from continual.files import atomic_torch_save

    cfg = RunConfig(**FAST, validation=0.2)
    run(cfg, checkpoint_dir=tmp_path)
    newest = sorted(tmp_path.glob("checkpoint-*.pt"))[-1]
    state = torch.load(newest, weights_only=True)
    state.pop("sha256")
    state.pop("validation_acc_matrix")
    atomic_torch_save(state, newest, checksum=True)
    problems = []
    resumed = run(cfg, checkpoint_dir=tmp_path, on_problem=problems.append)
    assert any("incomplete checkpoint (no 'validation_acc_matrix'" in p for p in problems)
    assert resumed.validation == run(cfg).validation


def test_cached_features_carry_the_validation_inputs_too(tmp_path):
    from continual.transfer import pretrain

    path = tmp_path / "digits01.pt"
    pretrain("split-digits", path, classes=[0, 1], epochs=1, device="cpu", seed=0)
    common = {**FAST, "strategy": "transfer", "pretrained": str(path), "validation": 0.2}
    cached, recomputed = run(RunConfig(**common)), run(RunConfig(**common, feature_cache="off"))
    assert cached.provenance["features"]["cached"] and not recomputed.provenance["features"]["cached"]
    n = min(cached.validation["sizes"])
    assert np.abs(np.asarray(cached.validation["acc_matrix"]) - np.asarray(recomputed.validation["acc_matrix"])).max() <= 1 / n + 1e-12


def test_batched_seeds_refuse_validation():
    from continual.batched import batchable

    assert batchable(RunConfig(strategy="ewc")) is None
    reason = batchable(RunConfig(strategy="ewc", validation=0.2))
    assert reason.startswith("validation=0.2 holds out other samples for each seed") and "\n" not in reason


# ----------------------------------------------------------------------- ranking and the CLI
def made(label, seed, test, val=None):
    """A hand-made 2-experience result: final test accuracy ``test``, validation ``val`` (or none)."""
    R = [[0.9, 0.0], [test, test]]
    validation = {}
    if val is not None:
        V = [[0.9, 0.0], [val, val]]
        validation = {"fraction": 0.2, "sizes": [10, 10], "acc_matrix": V, "random_init": [0.1, 0.1],
                      "metrics": summary(V, [0.1, 0.1], test_sizes=[10, 10])}
    return Result(config={"benchmark": "b", "scenario": "class", "strategy": "ewc", "label": label}, seed=seed,
                  acc_matrix=R, random_init=[0.1, 0.1], metrics=summary(R, [0.1, 0.1]),
                  timings={"total_train": 1.0, "total_eval": 0.0, "wall": 1.0}, validation=validation)


def table_order(text, labels):
    return sorted(labels, key=lambda label: text.index(f" {label} "))


def test_compare_ranks_by_validation_or_test(tmp_path, capsys):
    # lam=1 is best on test, lam=100 on validation: the ranking follows what it is asked for
    for seed in (0, 1):
        save_result(made("lam=1", seed, 0.80, 0.60), tmp_path / f"a{seed}.json")
        save_result(made("lam=10", seed, 0.70, 0.65), tmp_path / f"b{seed}.json")
        save_result(made("lam=100", seed, 0.60, 0.75), tmp_path / f"c{seed}.json")
    labels = ["lam=1", "lam=10", "lam=100"]
    assert main(["compare", str(tmp_path), "--rank-by", "validation"]) == 0
    out = capsys.readouterr().out
    assert "val acc (%)" in out and table_order(out, labels) == ["lam=100", "lam=10", "lam=1"]
    md = (tmp_path / "compare.md").read_text()
    assert table_order(md, labels) == ["lam=100", "lam=10", "lam=1"] and "| val acc (%) |" in md
    assert "validation_accuracy_mean" in (tmp_path / "compare.csv").read_text()
    assert main(["compare", str(tmp_path)]) == 0  # default: test
    assert table_order(capsys.readouterr().out, labels) == ["lam=1", "lam=10", "lam=100"]
    row = summarize([made("x", 0, 0.5, 0.4), made("x", 1, 0.5, 0.6)])[0]
    assert row["validation_accuracy"][0] == pytest.approx(np.mean([(0.4 + 0.4) / 2, (0.6 + 0.6) / 2]))
    assert not math.isnan(row["validation_accuracy"][1])


def test_rank_by_validation_without_validation_names_the_results(tmp_path, capsys):
    save_result(made("with", 0, 0.8, 0.7), tmp_path / "a.json")
    save_result(made("without", 0, 0.9), tmp_path / "b.json")
    assert main(["compare", str(tmp_path), "--rank-by", "validation"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("continual: error: --rank-by validation: no validation accuracy for b/class without ")
    assert "with," not in err and err.count("\n") == 1
    assert main(["compare", str(tmp_path)]) == 0  # no ranking by default: a dash where no validation
    assert table_order(capsys.readouterr().out, ["with", "without"]) == ["with", "without"]
    assert main(["compare", str(tmp_path), "--rank-by", "test"]) == 0
    assert table_order(capsys.readouterr().out, ["with", "without"]) == ["without", "with"]
    with pytest.raises(ContinualError, match="--rank-by 'dev' is not accepted; expected one of test, validation"):
        rank_rows([], "dev")


def test_cli_validation_end_to_end(tmp_path, capsys):
    out = tmp_path / "runs"
    common = ["run", "--epochs", "1", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(common + ["--validation", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("continual: error: validation=1.5 is out of range") and err.count("\n") == 1
    assert main(common + ["--validation", "0.2", "--seeds", "2", "--batched", "on"]) == 0
    err = capsys.readouterr().err
    assert "training the seeds one at a time: validation=0.2 holds out other samples for each seed" in err
    files = sorted(out.glob("*.json"))
    assert len(files) == 2
    for f in files:
        r = load_result(f)
        assert r.config["validation"] == 0.2 and np.asarray(r.validation["acc_matrix"]).shape == (5, 5)
    assert main(common + ["--lr", "0.01"]) == 0  # no validation: a second configuration
    capsys.readouterr()
    assert main(["compare", str(out), "--rank-by", "validation"]) == 2
    assert "no validation accuracy for split-digits/class finetune [lr=0.01" in capsys.readouterr().err
    for f in out.glob("*.json"):
        if load_result(f).config["lr"] == 0.01:
            f.unlink()
    assert main(["compare", str(out), "--rank-by", "validation"]) == 0
    assert "val acc (%)" in capsys.readouterr().out


SWEEP = """
out = "{out}"
seeds = 1
[base]
benchmark = "split-digits"
epochs = 1
device = "cpu"
validation = [0.0, 0.2]
[strategies]
finetune = {{}}
"""


def test_a_sweep_with_validation_points_at_compare_by_validation(tmp_path, capsys):
    f = tmp_path / "sweep.toml"
    f.write_text(SWEEP.format(out=tmp_path / "out"))
    assert main(["sweep", str(f), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"continual compare {tmp_path / 'out'} --rank-by validation" in out
    results = [load_result(p) for p in (tmp_path / "out").rglob("result.json")]
    assert sorted(bool(r.validation) for r in results) == [False, True]
    f.write_text(SWEEP.format(out=tmp_path / "out2").replace("validation = [0.0, 0.2]", ""))
    assert main(["sweep", str(f), "--quiet"]) == 0
    assert "--rank-by validation" not in capsys.readouterr().out
