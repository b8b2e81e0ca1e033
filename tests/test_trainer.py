import numpy as np
import pytest
import torch
from torch import nn

from continual import MLP, ContinualError, Plugin, RunConfig, Trainer, run, split, synthetic


@pytest.fixture()
def stream():
    return split(synthetic(num_features=8, seed=1), 5)


def make_trainer(plugins=(), **kw):
    torch.manual_seed(0)
    kw = {"lr": 0.1, "epochs": 2, "batch_size": 16, "device": "cpu", **kw}
    return Trainer(MLP(8, (32,), 10), plugins=plugins, **kw)


class Recorder(Plugin):
    def __init__(self):
        self.events = []

    def before_experience(self, model, experience):
        self.events.append(("before", experience.index))

    def batch(self, x, y, t):
        self.events.append(("batch", len(x)))

    def penalty(self, model, *, x, y, t, out):
        self.events.append(("penalty", out.shape))

    def after_step(self, model):
        self.events.append(("step",))

    def after_experience(self, model, experience):
        self.events.append(("after", experience.index))


def test_hooks_are_called_in_order(stream):
    rec = Recorder()
    plugins = [rec]
    trainer = make_trainer(plugins, epochs=1)
    trainer.fit(stream[0])
    n = stream[0].num_train
    steps = -(-n // 16)
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "before" and kinds[-1] == "after"
    assert kinds[1:-1] == ["batch", "penalty", "step"] * steps
    assert rec.events[1] == ("batch", 16) and rec.events[2][1] == (16, 10)
    assert plugins == [rec]  # the caller's list is not modified


class DuckPlugin:  # no base class: any object with hooks works
    def __init__(self):
        self.count = 0

    def after_step(self, model):
        self.count += 1


def test_duck_typed_plugin(stream):
    duck = DuckPlugin()
    make_trainer([duck], epochs=1).fit(stream[0])
    assert duck.count == -(-stream[0].num_train // 16)


class Joiner(Plugin):
    """Joins a fixed extra batch: checks that the batch hook may grow the batch."""

    def __init__(self, x, y, t):
        self.extra = (x, y, t)
        self.sizes = []

    def batch(self, x, y, t):
        ex, ey, et = self.extra
        return torch.cat([x, ex]), torch.cat([y, ey]), torch.cat([t, et])

    def penalty(self, model, *, x, y, t, out):
        self.sizes.append(len(out))


def test_batch_hook_can_grow_the_batch(stream):
    e = stream[4]
    j = Joiner(e.x_train[:5], e.y_train[:5], e.t_train[:5])
    make_trainer([j], epochs=1).fit(stream[0])
    assert j.sizes[0] == 16 + 5


class ConstantPenalty(Plugin):
    name = "const"

    def penalty(self, model, *, x, y, t, out):
        return torch.tensor(0.25)


class ZeroGradPenalty(Plugin):
    """A penalty whose gradient points every weight towards zero."""

    def penalty(self, model, *, x, y, t, out):
        return 10.0 * sum((p**2).sum() for p in model.parameters())


def test_penalty_is_added_to_the_loss_and_recorded(stream):
    trainer = make_trainer([ConstantPenalty()])
    trainer.fit(stream[0])
    assert trainer.penalties["const"] == [pytest.approx(0.25)]
    base, shrunk = make_trainer(), make_trainer([ZeroGradPenalty()], lr=0.01)
    base.fit(stream[0])
    shrunk.fit(stream[0])
    norm = lambda m: sum(p.norm() ** 2 for p in m.parameters()).item()  # noqa: E731
    assert norm(shrunk.model) < 0.5 * norm(base.model)


class Grower(Plugin):
    def __init__(self):
        self.extra = nn.Parameter(torch.zeros(3))

    def before_experience(self, model, experience):
        return [self.extra] if experience.index == 0 else None


def test_parameters_returned_by_before_experience_join_the_optimizer(stream):
    g = Grower()
    trainer = make_trainer([g])
    groups = len(trainer.optimizer.param_groups)
    trainer.fit(stream[0])
    assert len(trainer.optimizer.param_groups) == groups + 1
    assert trainer.optimizer.param_groups[-1]["params"][0] is g.extra


def test_determinism_same_seed_same_matrix():
    cfg = RunConfig(benchmark="split-digits", strategy="finetune", epochs=2, device="cpu", seed=3)
    a, b = run(cfg), run(cfg)
    assert a.acc_matrix == b.acc_matrix and a.random_init == b.random_init
    c = run(RunConfig(benchmark="split-digits", strategy="finetune", epochs=2, device="cpu", seed=4))
    assert c.acc_matrix != a.acc_matrix


def test_evaluate_matches_a_manual_count(stream):
    trainer = make_trainer()
    trainer.fit(stream[0])
    accs = trainer.evaluate(stream)
    for e, a in zip(stream, accs):
        with torch.no_grad():
            out = trainer.model(e.transform(e.x_test))
        pred, (top2, _) = out.argmax(1), out.topk(2, 1)
        manual = (pred == e.y_test).double().mean().item()
        # evaluation batches differently, so a near tie (top two logits within float32 rounding)
        # may go either way; no other sample may differ
        ties = int(((top2[:, 0] - top2[:, 1]) <= 1e-5 * top2[:, 0].abs().clamp_min(1)).sum())
        assert abs(a - manual) <= ties / len(pred) + 1e-12


def test_task_scenario_masks_logits_to_the_tasks_classes():
    stream = split(synthetic(num_features=8, seed=1), 5, scenario="task")
    trainer = make_trainer()
    trainer.run(stream)
    e = stream[3]
    out = trainer.logits(e.transform(e.x_test), e.t_test)
    assert torch.isinf(out[:, [0, 1, 2, 3, 4, 5, 8, 9]]).all() and torch.isfinite(out[:, 6:8]).all()


def test_run_schedules(stream):
    joint = make_trainer().run(stream, schedule="joint")
    assert np.all(joint.values == joint.values[0])  # one row reported against every experience
    assert joint.random_init is not None
    seq = make_trainer().run(stream)
    assert seq.average_forgetting() > 0.5  # class-incremental fine-tuning forgets
    assert joint.final_average_accuracy() > seq.final_average_accuracy() + 0.3
    with pytest.raises(ContinualError, match="schedule"):
        make_trainer().run(stream, schedule="parallel")


class NaNPenalty(Plugin):
    def penalty(self, model, *, x, y, t, out):
        return torch.tensor(float("nan"))


def test_nan_loss_is_a_clear_error(stream):
    with pytest.raises(ContinualError, match=r"loss became nan in experience 0, epoch 0.*lr=0.1"):
        make_trainer([NaNPenalty()]).fit(stream[0])


def test_bad_trainer_arguments():
    with pytest.raises(ContinualError, match="optimizer 'rmsprop'"):
        make_trainer(optimizer="rmsprop")
    with pytest.raises(ContinualError, match="lr=0"):
        make_trainer(lr=0)
    with pytest.raises(ContinualError, match="device"):
        make_trainer(device="tpu")


def test_timings_per_phase(stream):
    trainer = make_trainer([ConstantPenalty()])
    trainer.run(stream)
    t = trainer.timings
    assert len(t.train) == len(t.plugins) == 5 and len(t.eval) == 5
    assert all(p <= tr for p, tr in zip(t.plugins, t.train))


class Exploding(Plugin):
    """A penalty whose strength makes the loss infinite, named like a regularizer's."""

    strength_names = ("lam",)

    def __init__(self, name, lam):
        self.name, self.lam = name, lam

    def penalty(self, model, *, x, y, t, out):
        return self.lam * sum((p**2).sum() for p in model.parameters())


def test_a_diverged_loss_names_the_learning_rate_and_each_penalty_strength(stream):
    with pytest.raises(ContinualError) as err:
        make_trainer([Exploding("ewc", 1e39)]).fit(stream[0])
    assert str(err.value) == ("the training loss became nan in experience 0, epoch 0 (lr=0.1, ewc lam=1e+39): "
                              "lower the learning rate (--lr) or the penalty's strength (--set lam=...)")
    with pytest.raises(ContinualError) as err:
        make_trainer([Exploding("ewc", 1e39), Exploding("mas", 0.5)]).fit(stream[0])
    assert "(lr=0.1, ewc lam=1e+39, mas lam=0.5): lower the learning rate (--lr) or the penalty's strength " \
           "(--set ewc.lam=... or --set mas.lam=...)" in str(err.value)


def test_a_diverged_run_of_ewc_names_lam():
    with pytest.raises(ContinualError, match=r"became nan in experience \d, epoch 0 \(lr=0.05, ewc lam=1e\+06\): .*--set lam=\.\.\."):
        run(RunConfig(strategy="ewc", epochs=1, device="cpu", params={"lam": 1e6}))


@pytest.mark.parametrize("device", ["meta", "mps", "xla", "hip", "xpu", "vulkan", "ipu", "privateuseone", "lazy", "cuda:x", "nope"])
def test_devices_this_build_cannot_train_on_are_refused_in_one_line(device):
    from continual.trainer import resolve_device

    with pytest.raises(ContinualError, match=r"device '.*'.*expected auto, cpu, cuda or cuda:N"):
        resolve_device(device)
    assert resolve_device("cpu").type == "cpu"


class LrRecorder(Plugin):
    """Records the learning rate of every group at each step."""

    def __init__(self, trainer_ref):
        self.trainer_ref, self.seen = trainer_ref, []

    def after_step(self, model):
        self.seen.append(tuple(g["lr"] for g in self.trainer_ref[0].optimizer.param_groups))


@pytest.mark.parametrize("schedule, kw, factors", [
    ("constant", {}, [1, 1, 1, 1, 1]),
    ("step", {"milestones": [2, 4], "lr_decay": 0.5}, [1, 1, 0.5, 0.5, 0.25]),
    ("cosine", {}, [0.5 * (1 + np.cos(np.pi * e / 5)) for e in range(5)]),
])
def test_lr_schedule_per_epoch_restarts_each_experience_and_keeps_group_scales(stream, schedule, kw, factors):
    ref = [None]
    rec = LrRecorder(ref)
    trainer = make_trainer([rec], epochs=5, batch_size=1000, lr_schedule=schedule, **kw)  # one step per epoch
    ref[0] = trainer
    trainer.optimizer.param_groups[0]["lr"] = 0.1
    trainer.optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.01})  # a scaled group
    trainer.fit(stream[0])
    trainer.fit(stream[1])
    expected = [(0.1 * f, 0.01 * f) for f in factors] * 2
    assert np.allclose(rec.seen, expected, rtol=1e-12, atol=0)
    assert [trainer.lr_factor(e) for e in range(5)] == pytest.approx(factors, rel=1e-12)


def test_bad_schedules_are_refused():
    with pytest.raises(ContinualError, match="unknown lr_schedule 'linear'; expected one of constant, step, cosine"):
        make_trainer(lr_schedule="linear")
    with pytest.raises(ContinualError, match=r"milestones=\[0\] must be epochs >= 1"):
        make_trainer(lr_schedule="step", milestones=[0])


class HoldOut(Plugin):
    """Trains on the first half of each experience only (the experience_data hook)."""

    def __init__(self):
        self.sizes = []

    def experience_data(self, experience):
        import dataclasses

        n = experience.num_train // 2
        return dataclasses.replace(experience, x_train=experience.x_train[:n], y_train=experience.y_train[:n],
                                   t_train=experience.t_train[:n])

    def batch(self, x, y, t):
        self.sizes.append(len(y))


def test_experience_data_hook_chooses_what_is_trained_on(stream):
    plugin = HoldOut()
    trainer = make_trainer([plugin], epochs=1, batch_size=1000)
    trainer.fit(stream[0])
    assert plugin.sizes == [stream[0].num_train // 2]


class Constant(Plugin):
    """An evaluation classifier that always predicts class 0."""

    classifier = "zero"

    def predict(self, model, x, t):
        return torch.zeros(len(x), dtype=torch.long, device=x.device)


def test_evaluation_classifiers_record_their_own_matrices(stream):
    trainer = make_trainer([Constant()], epochs=1)
    acc = trainer.run(stream)
    zero = trainer.matrices["zero"]
    assert set(trainer.matrices) == {"zero"}
    share = float((stream[0].y_test == 0).double().mean())  # class 0 is in experience 0
    assert zero.values[:, 0].tolist() == [pytest.approx(share, rel=1e-12)] * 5 and (zero.values[:, 1:] == 0).all()
    assert not np.array_equal(acc.values, zero.values)
    main = make_trainer([Constant()], epochs=1, classifier="zero")
    acc_zero = main.run(stream)
    assert np.array_equal(acc_zero.values, zero.values) and np.array_equal(main.matrices["linear"].values, acc.values)
    with pytest.raises(ContinualError, match="classifier 'nme' has no plugin; expected 'linear', 'zero'"):
        make_trainer([Constant()], classifier="nme")


class HalfLoss(Plugin):
    """Replaces the training loss by half the cross-entropy."""

    def criterion(self, out, y):
        return 0.5 * nn.functional.cross_entropy(out, y)


def test_a_plugin_criterion_replaces_the_loss_and_only_one_may(stream):
    a, b = make_trainer([HalfLoss()], epochs=1), make_trainer([], epochs=1, lr=0.05)  # half the loss = half the lr for SGD
    a.fit(stream[0])
    b.fit(stream[0])
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    with pytest.raises(ContinualError, match="each replace the training loss"):
        make_trainer([HalfLoss(), HalfLoss()])


class Rebuild(Plugin):
    rebuilds_optimizer = True  # the trainer builds a new optimizer at each experience


class Grad(Plugin):
    """Zeroes every gradient before the step (the before_step hook may change gradients)."""

    def before_step(self, model):
        for p in model.parameters():
            p.grad.zero_()


def test_before_step_sees_and_may_change_the_gradients_and_rebuilt_optimizers_start_fresh(stream):
    trainer = make_trainer([Grad()], epochs=1)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit(stream[0])
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), before))  # zero gradients: no step moved them
    trainer = make_trainer([Rebuild()], epochs=1, momentum=0.9)
    trainer.fit(stream[0])
    first = trainer.optimizer
    assert first.state  # momentum buffers after the first experience
    trainer.fit(stream[1])
    assert trainer.optimizer is not first


class Frozen(Plugin):
    skips_training = True

    def __init__(self):
        self.calls = []

    def before_experience(self, model, experience):
        self.calls.append("before")

    def batch(self, x, y, t):
        self.calls.append("batch")

    def after_experience(self, model, experience):
        self.calls.append("after")


def test_a_plugin_that_skips_training_gets_the_experience_hooks_and_no_step(stream):
    plugin = Frozen()
    trainer = make_trainer([plugin], epochs=2)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit(stream[0])
    assert plugin.calls == ["before", "after"]
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), before))


def test_compiled_training_steps_match_the_plain_ones_and_fail_in_one_line(monkeypatch):
    """compile=True trains through torch.compile (same arithmetic, to fused kernels' rounding);
    a compiler that fails is one line naming --compile."""
    stream = split(synthetic(num_features=8, train_per_class=20, test_per_class=5), 2)
    rows = []
    for compile in (False, True):
        torch.manual_seed(0)
        trainer = Trainer(MLP(8, (16,), 10), lr=0.1, epochs=1, batch_size=16, device="cpu", compile=compile)
        rows.append(trainer.run(stream).values)
    assert abs(rows[0] - rows[1]).max() <= 0.11  # one test sample of ~10 per experience, at most

    class Broken:
        def __call__(self, *args, **kwargs):
            raise RuntimeError("InductorError: no C++ compiler\nlong traceback")

    monkeypatch.setattr(torch, "compile", lambda model: Broken())
    trainer = Trainer(MLP(8, (16,), 10), lr=0.1, epochs=1, device="cpu", compile=True)
    with pytest.raises(ContinualError, match=r"^compile: torch.compile failed \(RuntimeError: InductorError: no C\+\+ compiler\); "
                                             r"run without --compile$"):
        trainer.fit(stream[0])
