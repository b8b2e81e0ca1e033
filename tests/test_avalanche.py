"""Avalanche interop: streams from its benchmarks, EWC and metrics equal to its own, our EWC as its plugin.

Needs the extra ``continual[avalanche]`` (CI installs it through ``.[test]``); skipped without it.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from continual import EWC, MLP, SI, AccuracyMatrix, ContinualError, ER, ReservoirBuffer
from continual.metrics import average_forgetting, backward_transfer

from .conftest import importable


@pytest.fixture(scope="module")
def av():
    return importable("avalanche")


class TensorSet(torch.utils.data.Dataset):
    """A torchvision-style dataset (``targets``) over tensors, what ``nc_benchmark`` takes."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.targets = y.tolist()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def tensors(n: int, seed: int, num_classes: int = 6, features: int = 8):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.randn(n, features, generator=g) + y[:, None].float()
    x[:, 0] = torch.arange(n, dtype=torch.float32)  # each row names its original index
    return x, y


ORDER = [3, 1, 5, 0, 2, 4]


def small_benchmark(**kwargs):
    from avalanche.benchmarks import nc_benchmark

    (x, y), (xt, yt) = tensors(240, 0), tensors(60, 1)
    bench = nc_benchmark(TensorSet(x, y), TensorSet(xt, yt), n_experiences=3, fixed_class_order=ORDER, **kwargs)
    return bench, (x, y), (xt, yt)


def test_importing_continual_does_not_import_avalanche():
    code = ("import sys, continual, continual.interop; "
            "assert 'avalanche' not in sys.modules and 'torchvision' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_avalanche_names_the_extra(monkeypatch):
    from continual.interop import avalanche as interop

    monkeypatch.setitem(sys.modules, "avalanche", None)  # import avalanche -> ImportError
    with pytest.raises(ContinualError, match=r"pip install 'continual\[avalanche\]'"):
        interop.from_avalanche(None)


@pytest.mark.parametrize("remap", [False, True])
def test_from_avalanche_reproduces_samples_labels_and_class_order(av, remap):
    from continual.interop import from_avalanche

    bench, (x, y), (xt, yt) = small_benchmark(task_labels=remap, shuffle=False, class_ids_from_zero_from_first_exp=remap)
    stream = from_avalanche(bench)
    assert len(stream) == 3 and stream.scenario == ("task" if remap else "class")
    assert stream.num_classes == 6
    assert list(stream.class_order) == (ORDER if remap else list(range(6)))
    for i, (e, tr, te) in enumerate(zip(stream, bench.train_stream, bench.test_stream)):
        assert e.classes == tuple(sorted(tr.classes_in_this_experience))
        assert e.task_id == (i if remap else 0) and set(e.t_train.tolist()) == {e.task_id}
        for xs, ys, exp in ((e.x_train, e.y_train, tr), (e.x_test, e.y_test, te)):
            items = [exp.dataset[k] for k in range(len(exp.dataset))]
            assert torch.equal(xs, torch.stack([it[0] for it in items]))
            assert ys.tolist() == [it[1] for it in items]
        # against the original tensors: the same samples, labels mapped by the class order
        order = torch.tensor(stream.class_order)
        idx = e.x_train[:, 0].long()
        assert torch.equal(e.x_train, x[idx]) and torch.equal(order[e.y_train], y[idx])
        assert sorted(order[e.y_train].unique().tolist()) == sorted(ORDER[2 * i : 2 * i + 2])
        assert e.num_train == 80 and e.num_test == 20


def test_from_avalanche_new_instances_is_domain_with_a_shared_test_set(av):
    from avalanche.benchmarks import ni_benchmark

    from continual.interop import from_avalanche

    (x, y), (xt, yt) = tensors(120, 0), tensors(30, 1)
    bench = ni_benchmark(TensorSet(x, y), TensorSet(xt, yt), n_experiences=3, shuffle=False, seed=0)
    stream = from_avalanche(bench)
    assert stream.scenario == "domain" and len(stream) == 3
    assert sum(e.num_train for e in stream) == 120
    assert all(e.x_test is stream[0].x_test and e.num_test == 30 for e in stream)
    assert from_avalanche(bench, scenario="class").scenario == "class"
    with pytest.raises(ContinualError, match="unknown scenario"):
        from_avalanche(bench, scenario="tasks")


def _fisher_setup(av):
    from continual.interop import from_avalanche

    bench, _, _ = small_benchmark(task_labels=False, shuffle=False)
    stream = from_avalanche(bench)
    torch.manual_seed(0)
    model = MLP(8, (16,), 6)
    return bench, stream, model


def test_batched_fisher_and_penalty_equal_avalanche_ewc(av):
    from avalanche.training.plugins import EWCPlugin
    from avalanche.training.utils import copy_params_dict

    bench, stream, model = _fisher_setup(av)
    lam, bs = 7.0, 16
    ours = EWC(lam, estimator="batched", convention="avalanche", batch_size=bs)
    theirs = EWCPlugin(ewc_lambda=lam)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for t in range(2):
        exp = bench.train_stream[t]
        imp = theirs.compute_importances(model, torch.nn.CrossEntropyLoss(), opt, exp.dataset, "cpu", bs)
        fisher = ours.importance(model, stream[t])
        for name, p in imp.items():
            # squared float32 gradients summed in another order: the error of an element is relative
            # to the tensor's scale, not to the element (one near 0 may come from cancellation)
            assert (fisher[name] - p.data).abs().max() <= 1e-5 * p.data.abs().max(), name
        ours.consolidate(model, stream[t])
        theirs.update_importances(imp, t)
        theirs.saved_params[t] = copy_params_dict(model)
        with torch.no_grad():  # move away from the anchor, as training would
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        strategy = SimpleNamespace(clock=SimpleNamespace(train_exp_counter=t + 1), model=model, device="cpu",
                                   loss=torch.zeros(()))
        theirs.before_backward(strategy)
        value = ours.penalty(model)
        assert strategy.loss.item() > 0
        torch.testing.assert_close(value, strategy.loss, rtol=1e-5, atol=0)


R = np.array([
    [0.95, 0.10, 0.05, 0.00],
    [0.60, 0.90, 0.10, 0.05],
    [0.40, 0.70, 0.85, 0.10],
    [0.30, 0.50, 0.65, 0.92],
])


def test_forgetting_and_bwt_equal_avalanche(av):
    from avalanche.evaluation.functional import forgetting as av_forgetting
    from avalanche.evaluation.metrics.forgetting_bwt import BWT, Forgetting

    T = len(R)
    functional = av_forgetting(R)[-1, : T - 1].mean()
    f, b = Forgetting(), BWT()
    for i in range(T):  # what the stream metrics see: initial value when trained, last value afterwards
        f.reset_last()
        b.reset_last()
        for j in range(T):
            f.update(j, R[i, j], initial=i == j)
            b.update(j, R[i, j], initial=i == j)
    stream_forgetting = np.mean(list(f.result().values()))
    stream_bwt = np.mean(list(b.result().values()))
    assert len(f.result()) == T - 1
    assert average_forgetting(R, mode="first") == pytest.approx(functional, abs=1e-12)
    assert average_forgetting(R, mode="first") == pytest.approx(stream_forgetting, abs=1e-12)
    assert backward_transfer(R) == pytest.approx(stream_bwt, abs=1e-12)


def test_accuracy_dictionaries_round_trip(av):
    from continual.interop import accuracy_matrix_from_avalanche, accuracy_matrix_to_avalanche

    m = AccuracyMatrix.from_rows(R)
    dicts = accuracy_matrix_to_avalanche(m)
    assert "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp003" in dicts[0]
    back = accuracy_matrix_from_avalanche([{**d, "Top1_Acc_Stream/eval_phase/test_stream/Task000": 0.5} for d in dicts])
    np.testing.assert_array_equal(back.values, R)
    partial = accuracy_matrix_from_avalanche(dicts[:2], num_experiences=4)
    assert not partial.complete
    with pytest.raises(ContinualError, match="no accuracy for experience"):
        accuracy_matrix_from_avalanche([{k: v for k, v in dicts[0].items() if not k.endswith("Exp002")}])


@pytest.mark.filterwarnings("ignore:No loggers specified")
def test_our_ewc_as_plugin_in_naive_penalises(av):
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    from continual.interop import accuracy_matrix_from_avalanche, as_avalanche_plugin

    bench, _, _ = small_benchmark(task_labels=False, shuffle=False)
    torch.manual_seed(0)
    model = MLP(8, (16,), 6)
    ewc = EWC(100.0, estimator="batched", convention="avalanche", batch_size=16)
    si = SI(0.1)
    plugins = [as_avalanche_plugin(ewc), as_avalanche_plugin(si)]
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), criterion=torch.nn.CrossEntropyLoss(),
                     train_mb_size=16, train_epochs=1, eval_mb_size=64, device="cpu", plugins=plugins,
                     evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]))
    results = []
    for exp in bench.train_stream:
        strategy.train(exp)
        results.append(strategy.eval(bench.test_stream))
    assert plugins[0].penalties[0] == 0.0 and all(p > 0 for p in plugins[0].penalties[1:])
    assert all(p > 0 for p in plugins[1].penalties[1:])
    assert ewc.num_consolidations == 3 and si.num_consolidations == 3
    acc = accuracy_matrix_from_avalanche(results)
    assert acc.complete and acc.values.shape == (3, 3)


def test_replay_is_refused(av):
    from continual.interop import as_avalanche_plugin

    with pytest.raises(ContinualError, match="ReplayPlugin"):
        as_avalanche_plugin(ER(ReservoirBuffer(10)))
    with pytest.raises(ContinualError, match="not a regularizer"):
        as_avalanche_plugin(object())
