"""Online streams: blurry protocols, the one loop's online mode, the anytime metrics, resume."""

import math

import numpy as np
import pytest
import torch

import continual  # noqa: F401  (registers every strategy)
from continual import RunConfig, run, split
from continual.data import Dataset
from continual.errors import ContinualError
from continual.metrics import (anytime_accuracy_auc, anytime_accuracy_curve, average_anytime_accuracy, min_accuracy,
                               worst_case_accuracy)
from continual.models import HeadExpansion, build_model
from continual.online import arrivals, blurry, make_blurry, parse_protocol, si_blurry
from continual.results import load_result
from continual.trainer import Plugin, Trainer
from tests.test_resume import whole_and_resumed

C, PER_CLASS, PER_CLASS_TEST = 10, 40, 6


def tagged(num_classes: int = C, per_class: int = PER_CLASS, *, seed: int = 0) -> Dataset:
    """A dataset whose first feature is each training sample's id / 1024 (the second: its label), in
    class-separable clusters, so every sample can be followed through a stream."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, 4, generator=g) * 3

    def make(n):
        y = torch.arange(num_classes).repeat_interleave(n)
        x = centres[y] + torch.randn(len(y), 4, generator=g)
        tag = torch.arange(len(y), dtype=torch.float32)[:, None] / 1024  # exact in float32, small enough to train on
        return torch.cat([tag, y[:, None].float(), x], 1), y

    x_tr, y_tr = make(per_class)
    x_te, y_te = make(PER_CLASS_TEST)
    return Dataset("tagged", x_tr, y_tr, x_te, y_te)


def ids(stream):
    return (torch.cat([e.x_train[:, 0] for e in stream]) * 1024).round().long()


def home_of(stream) -> dict[int, int]:
    """Original label -> the experience whose test split holds it (its home)."""
    return {stream.class_order[int(c)]: e.index for e in stream for c in e.y_test.unique()}


# ------------------------------------------------------------------ streams
@pytest.mark.parametrize("n, m", [(50, 10), (0, 30), (100, 0), (20, 50)])
def test_i_blurry_proportions(n, m):
    data = tagged()
    s = blurry(split(data, 5), disjoint=n, blurry=m, seed=3)
    assert len(s) == 5 and s.scenario == "class"
    # every training sample exactly once, every test sample exactly once
    assert sorted(ids(s).tolist()) == list(range(C * PER_CLASS))
    assert sum(e.num_test for e in s) == C * PER_CLASS_TEST
    home = home_of(s)
    assert sorted(home) == list(range(C))
    present = {c: set() for c in range(C)}  # original label -> experiences holding its training samples
    away = dict.fromkeys(range(C), 0)
    for e in s:
        original = e.x_train[:, 1].long()
        assert torch.equal(torch.tensor(s.class_order)[e.y_train], original)  # labels map back to the data's
        for c in original.tolist():
            present[c].add(e.index)
        for c, k in zip(*np.unique(original.numpy(), return_counts=True)):
            if home[int(c)] != e.index:
                away[int(c)] += int(k)
    disjoint = [c for c in range(C) if away[c] == 0 and len(present[c]) == 1]
    blurry_classes = [c for c in range(C) if c not in disjoint]
    if m > 0:
        assert len(disjoint) == C * n // 100  # N% of the classes in exactly one experience
        for c in blurry_classes:
            assert away[c] == PER_CLASS * m // 100  # M% of each blurry class's samples moved out of its home
    else:
        assert all(away[c] == 0 for c in range(C))
    # disjoint and blurry classes each shared out evenly over the experiences (by home)
    for group, size in ((disjoint, C * n // 100), (blurry_classes, C - C * n // 100)):
        if m > 0:
            counts = np.bincount([home[c] for c in group], minlength=5)
            assert counts.max() - counts.min() <= 1 and counts.sum() == size


def test_labels_are_renumbered_by_first_appearance_and_classes_recorded():
    s = blurry(split(tagged(), 5), disjoint=50, blurry=20, seed=1)
    y = torch.cat([e.y_train for e in s]).tolist()
    firsts = list(dict.fromkeys(y))
    assert firsts == list(range(C))
    for e in s:
        assert e.classes == tuple(sorted(set(e.y_train.tolist())))
    assert s.name.endswith("i-blurry-50-20")


def test_blurry_is_seeded_and_shuffled_within_experiences():
    a = blurry(split(tagged(), 5), disjoint=50, blurry=10, seed=0)
    b = blurry(split(tagged(), 5), disjoint=50, blurry=10, seed=0)
    c = blurry(split(tagged(), 5), disjoint=50, blurry=10, seed=1)
    assert torch.equal(ids(a), ids(b)) and not torch.equal(ids(a), ids(c))
    first = a[0].x_train[:, 0]
    assert not torch.equal(first, first.sort().values)  # not in the data's order


def test_si_blurry_every_sample_once_and_random_counts():
    data = tagged()
    counts = set()
    for seed in range(4):
        s = si_blurry(split(data, 5), disjoint=50, blurry=10, seed=seed)
        assert sorted(ids(s).tolist()) == list(range(C * PER_CLASS))
        assert all(e.num_train > 0 and e.num_test > 0 for e in s)
        home = home_of(s)
        moved = sum(int((torch.tensor([home[int(c)] for c in e.x_train[:, 1].long()]) != e.index).sum()) for e in s)
        blurry_samples = (C - C * 50 // 100) * PER_CLASS
        assert moved <= blurry_samples * 10 // 100
        counts.add(tuple(len(set(int(c) for c in e.y_test.unique())) for e in s))
    assert len(counts) > 1  # the class counts per experience are drawn, not fixed
    assert make_blurry(split(data, 5), "si-blurry", seed=0).name.endswith("si-blurry-50-10")


@pytest.mark.parametrize("bad", ["blurry", "i-blurry", "i-blurry-120-10", "i-blurry-5", "si-blurry-1-2-3", ""])
def test_bad_protocol_names_are_one_line_errors(bad):
    with pytest.raises(ContinualError, match="expected one of|percentages") as info:
        parse_protocol(bad)
    assert "\n" not in str(info.value)


def test_blurry_refuses_what_it_cannot_cut():
    with pytest.raises(ContinualError, match="at least 2 experiences"):
        blurry(split(tagged(), 1), disjoint=50, blurry=10)
    from continual import permuted

    with pytest.raises(ContinualError, match="class-incremental"):
        blurry(permuted(tagged(), 2), disjoint=50, blurry=10)
    assert len(blurry(tagged(), disjoint=50, blurry=10, num_experiences=2)) == 2  # from a dataset


def test_arrivals():
    assert arrivals(torch.tensor([3, 3, 1, 0, 2, 1, 5]), {3}, 3) == {0: [1], 3: [0, 2], 6: [5]}


# ------------------------------------------------------------------ anytime metrics (hand-computed)
LOG = {
    "num_experiences": 3,
    "boundaries": [20, 40, 60],
    "samples": [10, 20, 30, 40, 50, 60],
    "experience": [0, 0, 1, 1, 2, 2],
    "seen_acc": [0.5, 0.8, 0.4, 0.6, 0.5, 0.7],
    "stream_acc": [0.5, 0.8, 0.5, 0.7, 0.4, 0.6],
    "per_experience": [[0.5, 0.0, 0.0], [0.8, 0.0, 0.0], [0.2, 0.8, 0.0],
                       [0.6, 0.1, 0.0], [0.1, 0.5, 0.4], [0.5, 0.4, 0.9]],
    "num_seen": [2, 2, 4, 4, 6, 6],
}


def test_anytime_metrics_on_a_hand_written_log():
    assert anytime_accuracy_auc(LOG) == pytest.approx((0.5 + 0.8 + 0.4 + 0.6 + 0.5 + 0.7) / 6, abs=1e-12)
    assert average_anytime_accuracy(LOG) == pytest.approx(3.5 / 6, abs=1e-12)
    assert anytime_accuracy_curve(LOG) == pytest.approx([0.5, 0.65, 0.6, 0.625, 0.58, 3.5 / 6], abs=1e-12)
    # min-ACC_2: E_0 after sample 20 up to 40 (not the 0.1 at 50): min(0.2, 0.6) = 0.2
    assert min_accuracy(LOG, 2) == pytest.approx(0.2, abs=1e-12)
    # min-ACC_3: E_0 over 30..60: min(0.2, 0.6, 0.1, 0.5) = 0.1; E_1 over 50..60 (not its own end, 0.1 at 40):
    # min(0.5, 0.4) = 0.4
    assert min_accuracy(LOG, 3) == pytest.approx(0.25, abs=1e-12)
    assert worst_case_accuracy(LOG, 1) == pytest.approx(0.8, abs=1e-12)  # acc(E_1) at its end
    assert worst_case_accuracy(LOG, 2) == pytest.approx(0.1 / 2 + 0.2 / 2, abs=1e-12)
    assert worst_case_accuracy(LOG) == pytest.approx(0.9 / 3 + (2 / 3) * 0.25, abs=1e-12)


def test_anytime_metrics_refuse_bad_logs():
    with pytest.raises(ContinualError, match="not an anytime log"):
        anytime_accuracy_auc({"samples": [1]})
    with pytest.raises(ContinualError, match="one value per evaluation point"):
        anytime_accuracy_auc({**LOG, "seen_acc": [0.5]})
    with pytest.raises(ContinualError, match="k in 1..3"):
        worst_case_accuracy(LOG, 4)
    with pytest.raises(ContinualError, match="k in 2..3"):
        min_accuracy(LOG, 1)


# ------------------------------------------------------------------ the one loop, online
class Recorder(Plugin):
    """Records what the loop shows it; ``task_free`` so an online run takes it."""

    task_free = True

    def __init__(self):
        self.batches, self.events, self.steps = [], [], 0

    def before_experience(self, model, experience):
        self.events.append(("before", experience.index))

    def after_experience(self, model, experience):
        self.events.append(("after", experience.index))

    def batch(self, x, y, t):
        self.batches.append(x[:, 0].clone())

    def after_step(self, model):
        self.steps += 1


def online_trainer(stream, *, plugins=(), **kwargs):
    model = build_model("mlp", tuple(stream[0].x_train.shape[1:]), 0, head="incremental", capacity=stream.num_classes)
    head = HeadExpansion(model)
    return Trainer(model, lr=0.05, batch_size=10, device="cpu", online=True, plugins=[head, *plugins], **kwargs), model


def test_online_sees_every_sample_once_in_order_with_hidden_boundaries():
    s = blurry(split(tagged(), 4), disjoint=50, blurry=10, seed=0)
    rec = Recorder()
    trainer, _ = online_trainer(s, plugins=[rec], eval_every=35)
    acc = trainer.run(s)
    assert torch.equal((torch.cat(rec.batches) * 1024).round().long(), ids(s))  # one pass, in the stream's order
    assert rec.events == []  # boundaries hidden
    assert rec.steps == sum(math.ceil(e.num_train / 10) for e in s)
    log = trainer.anytime
    ends = np.cumsum([e.num_train for e in s]).tolist()
    assert log["boundaries"] == ends
    expected, seen = [], 0  # after the batch that crosses each multiple of 35, and at each end
    for e in s:
        for start in range(0, e.num_train, 10):
            before, seen = seen, seen + min(10, e.num_train - start)
            if seen // 35 > before // 35:
                expected.append(seen)
        if expected[-1] != seen:
            expected.append(seen)
    assert log["samples"] == expected
    assert [row for row in acc.values.tolist()] == [log["per_experience"][log["samples"].index(b)] for b in ends]
    assert acc.values[-1].tolist() == pytest.approx(trainer.evaluate(s), abs=0)  # the row is the model's accuracy


def test_boundaries_true_tells_the_plugins_and_passes_repeat_updates():
    s = split(tagged(), 3)
    rec = Recorder()
    trainer, _ = online_trainer(s, plugins=[rec], boundaries=True, train_passes=3)
    trainer.run(s)
    assert rec.events == [("before", 0), ("after", 0), ("before", 1), ("after", 1), ("before", 2), ("after", 2)]
    batches = sum(math.ceil(e.num_train / 10) for e in s)
    assert len(rec.batches) == batches and rec.steps == 3 * batches  # hooks once per batch, three updates each


def test_head_grows_as_classes_arrive():
    s = blurry(split(tagged(), 4), disjoint=50, blurry=30, seed=2)
    sizes = []

    class Watch(Plugin):
        task_free = True

        def batch(self, x, y, t):
            sizes.append((model.head.num_classes, int(y.max()) + 1))

    trainer, model = online_trainer(s, plugins=[Watch()])
    assert model.head.num_classes == 0
    trainer.run(s)
    # before each batch the head covers exactly the classes seen up to and including it
    running = 0
    for grown, top in sizes:
        running = max(running, top)
        assert grown == running


@pytest.mark.parametrize("strategy, match", [("ewc", "experience boundaries"), ("gdumb", "which the online loop does not do; run it offline"),
                                             ("icarl", "experience boundaries|evaluation classifier")])
def test_methods_that_need_boundaries_are_refused(strategy, match):
    with pytest.raises(ContinualError, match=match) as info:
        run(RunConfig(strategy=strategy, online=True, device="cpu"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("settings, match", [
    ({"eval_every": 10}, "apply to online runs"),
    ({"online": True, "epochs": 2}, "single pass"),
    ({"online": True, "eval_every": 0}, "positive"),
    ({"online": True, "train_passes": 0}, "positive"),
    ({"online": True, "blurry": "i-blurry-x"}, "expected one of"),
    ({"online": True, "blurry": "i-blurry-50-10", "benchmark": "permuted-digits"}, "class-incremental split"),
    ({"online": True, "strategy": "joint"}, "one pass"),
    ({"online": True, "head": "multi", "scenario": "task"}, "grows per experience"),
])
def test_bad_online_settings_are_one_line_errors(settings, match):
    with pytest.raises(ContinualError, match=match) as info:
        RunConfig(device="cpu", **settings).resolve()
    assert "\n" not in str(info.value)


def test_ewc_runs_online_when_boundaries_are_asked_for():
    r = run(RunConfig(strategy="ewc", online=True, boundaries=True, num_experiences=3, device="cpu"))
    assert len(r.extra["anytime"]["boundaries"]) == 3 and r.metrics["worst_case_accuracy"] >= 0


@pytest.mark.parametrize("strategy", ["finetune", "replay", "er-ace", "der++"])
def test_online_strategies_run_on_a_blurry_stream(strategy):
    r = run(RunConfig(strategy=strategy, online=True, blurry="i-blurry-50-10", eval_every=200, device="cpu", seed=1))
    assert r.config["batch_size"] == 10 and r.config["epochs"] == 1
    log = r.extra["anytime"]
    for key, fn in (("anytime_accuracy_auc", anytime_accuracy_auc), ("average_anytime_accuracy", average_anytime_accuracy),
                    ("worst_case_accuracy", worst_case_accuracy)):
        assert r.metrics[key] == fn(log)
    assert len(r.acc_matrix) == 5 and not any(math.isnan(v) for row in r.acc_matrix for v in row)
    if strategy != "finetune":  # replay keeps the past: better than fine-tuning
        fine = run(RunConfig(strategy="finetune", online=True, blurry="i-blurry-50-10", eval_every=200, device="cpu", seed=1))
        assert r.metrics["anytime_accuracy_auc"] > fine.metrics["anytime_accuracy_auc"]


def test_der_plus_plus_keeps_its_terms_over_repeated_passes():
    r = run(RunConfig(strategy="der++", online=True, train_passes=2, num_experiences=2, device="cpu"))
    assert all(p > 0 for p in r.penalties["der++"][1:])


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("strategy", ["finetune", "der++"])
def test_online_run_resumes_to_the_same_anytime_log(strategy, tmp_path):
    cfg = RunConfig(strategy=strategy, online=True, blurry="si-blurry", eval_every=150, num_experiences=4, device="cpu", seed=2)
    whole, resumed = whole_and_resumed(cfg, tmp_path, crash_at=2)
    assert resumed.extra["resumed"] is True
    assert resumed.extra["anytime"] == whole.extra["anytime"]
    assert resumed.acc_matrix == whole.acc_matrix and resumed.metrics == whole.metrics


# ------------------------------------------------------------------ CLI
def test_cli_online_blurry_run_prints_the_anytime_metrics_and_plots(tmp_path, capsys):
    from continual.cli import main

    out = tmp_path / "runs"
    assert main(["run", "--benchmark", "split-digits", "--strategy", "replay", "--online", "--blurry", "i-blurry-50-10",
                 "--eval-every", "100", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "A_AUC" in text and "AAA" in text and "WC-Acc" in text
    pngs = list(out.glob("anytime_*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (path,) = out.glob("*.json")
    r = load_result(path)
    assert r.config["online"] is True and r.config["blurry"] == "i-blurry-50-10"
    assert r.extra["anytime"]["samples"][0] == 100


def test_domain_streams_run_online_and_seen_means_the_experiences_reached():
    r = run(RunConfig(benchmark="permuted-digits", strategy="replay", online=True, eval_every=300, num_experiences=3, device="cpu"))
    log = r.extra["anytime"]
    assert r.config["head"] == "fixed" and log["seen_acc"] == log["stream_acc"]


def test_a_plain_split_stream_is_passed_once_in_a_seeded_order():
    from continual.experiment import build

    b = build(RunConfig(online=True, device="cpu", seed=4))
    plain = build(RunConfig(device="cpu", seed=4))
    for e, p in zip(b.stream, plain.stream):
        assert sorted(e.y_train.tolist()) == sorted(p.y_train.tolist()) and not torch.equal(e.x_train, p.x_train)
    again = build(RunConfig(online=True, device="cpu", seed=4))
    assert all(torch.equal(e.x_train, a.x_train) for e, a in zip(b.stream, again.stream))
