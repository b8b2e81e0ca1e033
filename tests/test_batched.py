"""Seeds trained together (continual.batched) against the same seeds' separate runs.

Tolerances, and why:

- Per-step task losses (cross-entropy before penalties) of the first 50 steps. The two paths
  compute the same float32 arithmetic in a different order (a batched matrix product against one
  per seed, a cross-entropy with ``reduction="none"`` then a mean): at the first step the logits
  differ by 2e-8-4e-8 and the gradients by 1e-8 (measured), a few units of float32 rounding
  (unit roundoff 6e-8). Training then carries these differences along, more or less:
  - class- and domain-incremental streams: the losses stayed within 2.4e-7 relative over the
    first 50 steps (and 8e-5 over every step) in every case measured; tolerance relative 1e-5
    (plus 1e-6 absolute), a 40x margin, and 3 orders below what a real mistake gives (a batch of
    another seed, a wrong initial head row or a missing penalty change a loss by 1e-2 or more);
  - the task-incremental stream (two-class tasks, where the softmax saturates quickly and small
    logit differences weigh more) amplified them faster through the vmap forward: 1.2e-4
    relative by step 50 for finetune alone, the same for online EWC (the written-out MLP forward,
    the default, stayed within 4.3e-7 over every step); tolerance relative 1e-3 on that stream
    (10x margin over the vmap figure, still 10x below a real mistake).
  - LwF (class-incremental): the distillation's gradient is the difference of two close softmaxes
    (the current model's and its frozen copy's), so float32 rounding weighs more: 8.3e-5 relative
    over the first 50 steps with the defaults, 9.7e-5 with alpha=2, T=4 (2.5e-7 on the task
    stream, 2.2e-7 on permuted-digits); in float64 the batched run equals the separate ones to
    1e-15 (measured), so the gap is rounding. Tolerance relative 1e-3 for the losses (10x margin)
    and 2e-3 for the penalties (3.5e-4 measured); a teacher of another seed changes the losses by
    8.6e-3 and the penalties by 4x. A single step is checked much tighter
    (``test_batched_distillation_equals_each_seeds_lwf``: the penalty to 1e-5, its gradient to
    1e-4, 1e-6 measured; a batch mean off by 0.1% fails).
  - replay: each seed's own ER and buffer (the same draws as its separate run), so only the
    forward's rounding differs: 2.2e-7 to 3.7e-7 relative over every step measured (reservoirs of
    500 and 100, task scenario, class-balanced herding; DER++: 4.4e-7 over the first 50 steps,
    1.2e-6 over every step, penalties 1.9e-7); the general tolerance. A buffer of another seed
    changes the batches themselves; DER++'s task loss averaged over the ignored replayed rows too
    fails both DER++ tests.
- Accuracy matrices (and the random-init row): each entry within one test prediction
  (1.5 / the smallest test split, 71 samples on split-digits): a prediction flips only when two
  logits tie to rounding. They were equal in every case measured.
- Final average accuracy: within 0.5 points (the issue's figure).
- Penalties per experience (mean over steps): relative 10x the losses' (1e-4; 1e-2 on the task
  stream): a sum over ~165k float32 terms in another order (3e-6 relative measured on L2), of
  squared differences ``theta - anchor`` whose relative error is that of the parameters times
  ``|theta| / |theta - anchor|`` (2e-4 measured on the task stream's last experience).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import continual.trainer as trainer_module
from continual.batched import BATCHABLE_STRATEGIES, batchable, run_batched
from continual.errors import ContinualError
from continual.experiment import RunConfig, run
from continual.replay.er import ERACE

SEEDS = [0, 1, 2]
STEPS = 50
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6
TASK_RTOL = 1e-3  # the task-incremental stream (see the module docstring)
DISTILL_RTOL, DISTILL_PENALTY_RTOL = 1e-3, 2e-3  # LwF (see the module docstring)


def _rtols(config: RunConfig) -> tuple[float, float]:
    """The tolerances of the per-step losses and of the penalties for ``config``."""
    if config.strategy == "lwf":
        return DISTILL_RTOL, DISTILL_PENALTY_RTOL
    rtol = TASK_RTOL if config.scenario == "task" else LOSS_RTOL
    return rtol, 10 * rtol


class _Recorder:
    """Stands for ``torch.nn.functional`` inside the trainer module: records each training loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def __getattr__(self, name):
        return getattr(F, name)

    def cross_entropy(self, out, y, *args, **kwargs):
        loss = F.cross_entropy(out, y, *args, **kwargs)
        self.losses.append(loss.item())
        return loss


def _separate(config: RunConfig, seed: int, monkeypatch) -> tuple[object, np.ndarray]:
    recorder = _Recorder()
    with monkeypatch.context() as m:
        m.setattr(trainer_module, "F", recorder)  # the trainer's own loss, step by step, without editing it
        criterion = ERACE.criterion  # ER-ACE replaces the trainer's loss: record what its criterion returns

        def recorded(self, out, y):
            loss = criterion(self, out, y)
            recorder.losses.append(loss.item())
            return loss

        m.setattr(ERACE, "criterion", recorded)
        result = run(dataclasses.replace(config, seed=seed))
    return result, np.array(recorder.losses)


def _compare(config: RunConfig, monkeypatch, *, forward: str = "auto") -> None:
    rtol, penalty_rtol = _rtols(config)
    steps: list[torch.Tensor] = []
    batched = run_batched(config, SEEDS, on_step=lambda losses: steps.append(losses.clone()), forward=forward)
    batched_losses = torch.stack(steps).numpy()  # (steps, seeds)
    assert [r.seed for r in batched] == SEEDS
    matrices = []
    for i, seed in enumerate(SEEDS):
        alone, losses = _separate(config, seed, monkeypatch)
        mine = batched[i]
        assert len(losses) == len(batched_losses) >= STEPS
        np.testing.assert_allclose(batched_losses[:STEPS, i], losses[:STEPS], rtol=rtol, atol=LOSS_ATOL)
        tol = 1.5 / min(alone.test_sizes)
        np.testing.assert_allclose(np.array(mine.acc_matrix), np.array(alone.acc_matrix), atol=tol)
        np.testing.assert_allclose(mine.random_init, alone.random_init, atol=tol)
        assert abs(mine.metrics["final_average_accuracy"] - alone.metrics["final_average_accuracy"]) <= 0.005
        assert mine.config == alone.config and mine.test_sizes == alone.test_sizes
        assert set(mine.penalties) == set(alone.penalties)
        for name in alone.penalties:
            np.testing.assert_allclose(mine.penalties[name], alone.penalties[name], rtol=penalty_rtol, atol=1e-9)
        assert mine.extra["batched"]["seeds"] == len(SEEDS)
        assert {k: v for k, v in mine.extra.items() if k not in ("batched", "memory")} == \
            {k: v for k, v in alone.extra.items() if k != "memory"}
        assert set(dataclasses.asdict(mine)) == set(dataclasses.asdict(alone))
        matrices.append(np.array(mine.acc_matrix))
    assert not np.array_equal(matrices[0], matrices[1])  # the seeds are really different runs


@pytest.mark.parametrize("strategy", BATCHABLE_STRATEGIES)
def test_batched_equals_separate_runs(strategy, monkeypatch):
    _compare(RunConfig(benchmark="split-digits", strategy=strategy, epochs=2, device="cpu"), monkeypatch)


@pytest.mark.parametrize("config", [
    RunConfig(benchmark="permuted-digits", strategy="ewc", epochs=1, device="cpu"),  # each seed its own permutations
    RunConfig(benchmark="split-digits", scenario="task", strategy="online-ewc", epochs=2, device="cpu"),  # fixed head, task mask
    RunConfig(benchmark="split-digits", strategy="ewc", epochs=2, optimizer="adam", lr=0.001, device="cpu"),
    RunConfig(benchmark="split-digits", strategy="l2", epochs=3, momentum=0.9, lr_schedule="cosine", device="cpu"),
    # other Fisher estimators and a subset: the consolidation is each seed's own plugin on its own model
    RunConfig(benchmark="split-digits", strategy="ewc", epochs=2, params={"estimator": "exact", "num_samples": 100}, device="cpu"),
    # MAS's importance on the task scenario's masked logits (each seed's own plugin, after each experience); the paper's lambda
    RunConfig(benchmark="split-digits", scenario="task", strategy="mas", epochs=2, params={"lam": 1.0}, device="cpu"),
    # SI's path integral with Adam's steps (not proportional to the gradient) and the authors' c=1
    RunConfig(benchmark="split-digits", strategy="si", epochs=2, optimizer="adam", lr=0.001, params={"c": 1.0}, device="cpu"),
    # LwF in the task scenario: one distillation group per past task, on the logits before the task mask
    RunConfig(benchmark="split-digits", scenario="task", strategy="lwf", epochs=2, device="cpu"),
    RunConfig(benchmark="split-digits", strategy="lwf", epochs=2, params={"alpha": 2.0, "temperature": 4.0}, device="cpu"),
    # replay: a reservoir that replaces samples from the first experience on (each seed's own draws), in the task
    # scenario (the replayed rows masked to their own tasks) and a class-balanced buffer filled by herding (each seed's model)
    RunConfig(benchmark="split-digits", strategy="replay", epochs=2, params={"mem": 100, "replay_batch": 16}, device="cpu"),
    RunConfig(benchmark="split-digits", scenario="task", strategy="replay", epochs=2, params={"mem": 100}, device="cpu"),
    RunConfig(benchmark="split-digits", strategy="replay", epochs=2, params={"buffer": "class-balanced", "selection": "herding",
                                                                             "mem": 50}, device="cpu"),
    # DER++ in the task scenario (stored logits masked to -inf, left out of the MSE) with a small reservoir
    RunConfig(benchmark="split-digits", scenario="task", strategy="der++", epochs=2, params={"mem": 100}, device="cpu"),
], ids=["permuted-ewc", "task-online-ewc", "adam-ewc", "momentum-cosine-l2", "exact-fisher-subset-ewc", "task-mas", "adam-si",
        "task-lwf", "alpha-temperature-lwf", "small-reservoir", "task-reservoir", "herding-class-balanced", "task-der++"])
def test_batched_equals_separate_runs_elsewhere(config, monkeypatch):
    _compare(config, monkeypatch)


@pytest.mark.parametrize("config", [
    RunConfig(benchmark="split-digits", strategy="ewc", epochs=2, device="cpu"),
    RunConfig(benchmark="split-digits", scenario="task", strategy="online-ewc", epochs=2, device="cpu"),
    RunConfig(benchmark="split-digits", scenario="task", strategy="lwf", epochs=2, device="cpu"),  # old models through vmap too
], ids=["ewc", "task-online-ewc", "task-lwf"])
def test_vmap_forward_equals_separate_runs(config, monkeypatch):
    """The general forward (functional_call under vmap), which a plain MLP does not take by default."""
    _compare(config, monkeypatch, forward="vmap")


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_batched_distillation_equals_each_seeds_lwf(scenario):
    """One step, no training dynamics: the batched LwF penalty and its gradient equal each seed's own
    ``LwF.penalty`` on the same parameters and batch, to float32 rounding (a wrong temperature,
    alpha, group, teacher or batch mean is off by far more; the whole-run tolerance is looser,
    see the module docstring)."""
    from continual.batched import _Seeds

    config = RunConfig(benchmark="split-digits", scenario=scenario, strategy="lwf", epochs=1, device="cpu",
                       params={"alpha": 1.5, "temperature": 3.0})
    b = _Seeds(config, SEEDS)
    b.fit([stream[0] for stream in b.streams], None, ())
    b.before_experience([stream[1] for stream in b.streams])
    with torch.no_grad():  # move away from the teachers, so that the penalty is not 0
        for p in b.params.values():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    exp = b.streams[0][1]
    xb = torch.stack([exp.transform(exp.x_train[:20])] * len(SEEDS))  # (S, B, ...)
    (q,) = b.stacked
    value = b.distill(q, b.forward(xb), xb)  # (S,)
    grads = torch.autograd.grad(value.sum(), list(b.params.values()))
    b.to_models()
    for i, (model, plugins) in enumerate(zip(b.models, b.plugins)):
        (lwf,) = [p for p in plugins if type(p).__name__ == "LwF"]
        alone = lwf.penalty(model, x=xb[i], t=exp.t_train[:20], out=model(xb[i]))
        assert alone.item() > 1e-3
        torch.testing.assert_close(value[i], alone, rtol=1e-5, atol=1e-7)
        for (name, p), g in zip(b.params.items(), grads):
            own = torch.autograd.grad(alone, dict(model.named_parameters())[name], retain_graph=True)[0]
            torch.testing.assert_close(g[i], own, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("config, words", [
    (RunConfig(strategy="icarl"), "strategy 'icarl' is not batched yet"),
    (RunConfig(strategy="a-gem"), "strategy 'a-gem' is not batched yet"),
    (RunConfig(strategy="ewc", model="convnet"), "model 'convnet' is not batched"),
    (RunConfig(strategy="finetune", class_order="random"), "class_order='random'"),
    (RunConfig(strategy="finetune", head="multi", scenario="task"), "head 'multi' is not batched"),
])
def test_unbatchable_gives_one_line_reason(config, words):
    reason = batchable(config)
    assert reason is not None and words in reason and "\n" not in reason
    with pytest.raises(ContinualError, match=re.escape(words)):
        run_batched(config, SEEDS)


def test_batchable_and_bad_seeds():
    assert batchable(RunConfig(strategy="online-ewc", benchmark="permuted-digits")) is None
    with pytest.raises(ContinualError, match="each once"):
        run_batched(RunConfig(epochs=1, device="cpu"), [1, 1])
    with pytest.raises(ContinualError, match="unknown forward 'jit'"):
        run_batched(RunConfig(epochs=1, device="cpu"), [1], forward="jit")


def test_caller_rng_is_restored():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    run_batched(RunConfig(strategy="finetune", epochs=1, num_experiences=2, device="cpu"), [0, 1])
    assert torch.equal(torch.get_rng_state(), before)


def test_epoch_end_callback_gives_each_seeds_mean_loss():
    config = RunConfig(strategy="ewc", epochs=1, num_experiences=2, device="cpu")
    seen = []
    run_batched(config, [3, 4], callbacks=[lambda event, info: seen.append(info) if event == "epoch_end" else None])
    assert [info["seeds"] for info in seen] == [[3, 4], [3, 4]]
    for seed_index, seed in enumerate([3, 4]):
        alone = []
        run(dataclasses.replace(config, seed=seed), callbacks=[lambda event, info: alone.append(info["loss"]) if event == "epoch_end" else None])
        np.testing.assert_allclose([info["loss"][seed_index] for info in seen], alone, rtol=LOSS_RTOL)


def test_a_diverging_seed_stops_the_batch_and_is_named():
    with pytest.raises(ContinualError, match="seed 0"):
        run_batched(RunConfig(strategy="finetune", epochs=1, num_experiences=1, lr=1e30, device="cpu"), [0, 1])


def test_batched_results_save_and_load(tmp_path):
    from continual.results import load_result, save_result

    (result,) = run_batched(RunConfig(strategy="l2", epochs=1, num_experiences=2, device="cpu"), [5])
    back = load_result(save_result(result, tmp_path / "r.json"))
    assert back.acc_matrix == result.acc_matrix and back.extra["batched"]["seeds"] == 1 and back.seed == 5


def test_the_cli_trains_seeds_together_on_request_and_falls_back_in_one_line(tmp_path, capsys):
    """`continual run --seeds 3 --batched on` writes each seed's file, with the matrices of
    `--batched off`; a strategy it cannot batch trains one seed at a time and says why in one line."""
    import json

    from continual.cli import main

    common = ["run", "--seeds", "3", "--epochs", "1", "--device", "cpu", "--quiet"]
    assert main(common + ["--batched", "on", "--out", str(tmp_path / "on")]) == 0
    assert main(common + ["--batched", "off", "--out", str(tmp_path / "off")]) == 0
    on, off = sorted((tmp_path / "on").glob("*.json")), sorted((tmp_path / "off").glob("*.json"))
    assert [p.name for p in on] == [p.name for p in off] and len(on) == 3
    for a, b in zip(on, off):
        ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
        assert ra["extra"]["batched"]["seeds"] == 3 and "batched" not in rb["extra"]
        for row_a, row_b in zip(ra["acc_matrix"], rb["acc_matrix"]):  # batched products may round differently:
            assert all(abs(x - y) <= 0.015 for x, y in zip(row_a, row_b))  # at most one of ~72 test images per entry
    capsys.readouterr()
    assert main(["run", "--seeds", "2", "--epochs", "1", "--strategy", "a-gem", "--batched", "on", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "der")]) == 0
    err = capsys.readouterr().err.strip()
    assert err == ("continual: training the seeds one at a time: strategy 'a-gem' is not batched yet "
                   "(batched: finetune, joint, cumulative, l2, ewc, online-ewc, mas, si, lwf, replay, der++, ewc+replay, er-ace)")
    assert len(list((tmp_path / "der").glob("*.json"))) == 2


class _Crash(Exception):
    pass


def _whole_and_resumed(config: RunConfig, seeds: list[int], folder, *, crash_at: int = 2, mid_step: int | None = None,
                       problems: list | None = None, started: list | None = None):
    """The results of ``config``'s seeds trained batched without a break, and of the same batched
    run killed (an exception from a callback at the start of experience ``crash_at``, after the
    checkpoint of the one before; or from ``on_step`` at step ``mid_step`` of the whole run, in
    the middle of an experience) and started again in ``folder``, as a restarted process would."""
    whole = run_batched(config, seeds)

    def crash(event, info):
        if event == "experience_start" and info["index"] == crash_at:
            raise _Crash

    steps = [0]

    def crash_step(losses):
        steps[0] += 1
        if steps[0] == mid_step:
            raise _Crash

    with pytest.raises(_Crash):
        if mid_step is None:
            run_batched(config, seeds, callbacks=[crash], checkpoint_dir=folder)
        else:
            run_batched(config, seeds, on_step=crash_step, checkpoint_dir=folder)
    def start(event, info):
        if event == "experience_start" and started is not None:
            started.append(info["index"])

    return whole, run_batched(config, seeds, checkpoint_dir=folder, callbacks=[start],
                              on_problem=(problems.append if problems is not None else None))


def _assert_same_results(resumed, whole, *, was_resumed: bool = True) -> None:
    """Exactly the uninterrupted batched run's results, timings aside (as tests/test_resume.py's assert_same_run)."""
    assert [r.seed for r in resumed] == [r.seed for r in whole]
    for r, w in zip(resumed, whole):
        assert r.acc_matrix == w.acc_matrix and r.random_init == w.random_init and r.metrics == w.metrics
        assert r.penalties == w.penalties and r.config == w.config and r.test_sizes == w.test_sizes
        assert {k: v for k, v in r.extra.items() if k != "resumed"} == w.extra
        assert r.extra.get("resumed", False) is was_resumed


@pytest.mark.parametrize("strategy, settings", [
    ("finetune", {"momentum": 0.9}),  # the stacked optimizer's momentum, the incremental head's rows drawn per seed
    ("ewc", {"optimizer": "adam", "lr": 0.001}),  # Adam's moments and step counts; the stacked importances and anchors
    ("si", {}),  # the path integral, its start and prev, in each seed's plugin between experiences
    ("lwf", {}),  # each seed's frozen copy, stacked again on load
    ("replay", {"params": {"mem": 100}}),  # each seed's buffer and its generator (a reservoir that replaces samples)
    ("der++", {"params": {"mem": 100}}),  # the buffer's stored logits
])
def test_a_killed_batched_run_resumes_to_the_identical_results(strategy, settings, tmp_path):
    config = RunConfig(benchmark="split-digits", strategy=strategy, epochs=1, num_experiences=4, device="cpu", **settings)
    started: list[int] = []
    whole, resumed = _whole_and_resumed(config, [0, 1], tmp_path / "checkpoints", started=started)
    assert started == [2, 3]
    _assert_same_results(resumed, whole)
    assert not np.array_equal(whole[0].acc_matrix, whole[1].acc_matrix)


def test_a_batched_run_killed_mid_experience_redoes_it_from_the_checkpoint_before(tmp_path):
    """Killed by ``on_step`` at step 30 of the run, in the third experience (split-digits in 4
    experiences at batch 32: 11-12 steps each); the restart trains the third again from the
    second's checkpoint."""
    config = RunConfig(benchmark="split-digits", strategy="ewc", epochs=1, num_experiences=4, momentum=0.9, device="cpu")
    folder = tmp_path / "checkpoints"
    started: list[int] = []
    whole, resumed = _whole_and_resumed(config, [2, 3], folder, mid_step=30, started=started)
    assert started == [2, 3]
    _assert_same_results(resumed, whole)
    assert sorted(p.name for p in folder.glob("*.pt")) == ["batched-checkpoint-0002.pt", "batched-checkpoint-0003.pt"]


def test_joint_and_cumulative_resume(tmp_path):
    """Joint trains once (its one checkpoint is the finished run: a restart trains nothing);
    cumulative trains on the experiences so far."""
    joint = RunConfig(strategy="joint", epochs=1, num_experiences=3, device="cpu")
    whole = run_batched(joint, [0, 1], checkpoint_dir=tmp_path / "joint")
    again = run_batched(joint, [0, 1], checkpoint_dir=tmp_path / "joint", callbacks=[lambda e, i: pytest.fail(f"trained: {e}")])
    _assert_same_results(again, whole)
    cumulative = RunConfig(strategy="cumulative", epochs=1, num_experiences=3, device="cpu")
    whole, resumed = _whole_and_resumed(cumulative, [0, 1], tmp_path / "cumulative", crash_at=1)
    _assert_same_results(resumed, whole)


def test_corrupt_and_foreign_batched_checkpoints_are_reported_and_passed_over(tmp_path):
    """The newest checkpoint corrupted: reported, the one before used (the run repeats one more
    experience, to the same results); checkpoints of other seeds or another configuration in the
    folder: reported, never used."""
    config = RunConfig(benchmark="split-digits", strategy="si", epochs=1, num_experiences=4, device="cpu")
    folder = tmp_path / "checkpoints"
    whole = run_batched(config, [0, 1])

    def crash(event, info):
        if event == "experience_start" and info["index"] == 3:
            raise _Crash

    with pytest.raises(_Crash):
        run_batched(config, [0, 1], callbacks=[crash], checkpoint_dir=folder)
    newest = folder / "batched-checkpoint-0002.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped in the middle
    newest.write_bytes(bytes(data))
    problems: list[str] = []
    started: list[int] = []
    resumed = run_batched(config, [0, 1], checkpoint_dir=folder, on_problem=problems.append,
                          callbacks=[lambda e, i: started.append(i["index"]) if e == "experience_start" else None])
    assert len(problems) == 1 and "batched-checkpoint-0002.pt" in problems[0] and "using the one before" in problems[0]
    assert started == [2, 3]  # resumed after experience 1
    _assert_same_results(resumed, whole)

    for other, seeds in ((config, [0, 2]), (dataclasses.replace(config, lr=0.05), [0, 1])):
        problems = []
        results = run_batched(other, seeds, checkpoint_dir=folder, on_problem=problems.append)
        assert problems and all("another configuration or other seeds, ignored" in p for p in problems)
        assert all("resumed" not in r.extra for r in results)


def test_the_cli_resumes_a_batched_run_killed_with_sigkill(tmp_path):
    """`continual run --seeds 2 --batched on` killed (SIGKILL) after the second experience's
    checkpoint, then the same command again: it resumes from the seeds' checkpoint folder, removes
    it once both results are saved, and every seed's file has the uninterrupted command's matrices."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from continual.cli import result_name

    args = ["run", "--seeds", "2", "--batched", "on", "--epochs", "20", "--num-experiences", "4", "--momentum", "0.9",
            "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def command(out: str) -> list[str]:
        return [sys.executable, "-m", "continual.cli", *args, "--out", out]

    names = [result_name(RunConfig(epochs=20, num_experiences=4, momentum=0.9, device="cpu", seed=s).resolve()) for s in (0, 1)]
    folder = tmp_path / "killed" / ".checkpoints" / f"{names[0]}-batched2"
    proc = subprocess.Popen(command("killed"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (folder / "batched-checkpoint-0001.pt").exists():  # experiences 0 and 1 done: now in the third
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not any((tmp_path / "killed" / f"{n}.json").exists() for n in names)
    subprocess.run(command("killed"), cwd=tmp_path, env=env, check=True, capture_output=True)  # the same command: resumes
    assert not folder.exists() and not (tmp_path / "killed" / ".checkpoints").exists()
    subprocess.run(command("whole"), cwd=tmp_path, env=env, check=True, capture_output=True)
    for n in names:
        resumed = json.loads((tmp_path / "killed" / f"{n}.json").read_text())
        whole = json.loads((tmp_path / "whole" / f"{n}.json").read_text())
        assert resumed["extra"]["resumed"] is True and "resumed" not in whole["extra"]
        assert resumed["acc_matrix"] == whole["acc_matrix"] and resumed["random_init"] == whole["random_init"]
        assert resumed["penalties"] == whole["penalties"]
