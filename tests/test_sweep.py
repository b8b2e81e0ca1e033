import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from continual import ContinualError, Plugin, RunConfig, Strategy, load_result, run, save_result
from continual.cli import main
from continual.files import FolderLock, atomic_torch_save
from continual.strategies import STRATEGIES, register
from continual.sweep import Sweep, config_hash, run_dir, run_sweep
from tests.test_results import fake

SWEEP = """
out = "{out}"
seeds = 2
[base]
benchmark = "split-digits"
epochs = [1, 2]
device = "cpu"
[strategies]
finetune = {{}}
joint = {{}}
"""


def write_sweep(tmp_path, text=SWEEP):
    f = tmp_path / "sweep.toml"
    f.write_text(text.format(out=tmp_path / "out"))
    return f


def test_grid_expansion_and_hashing(tmp_path):
    sweep = Sweep.from_file(write_sweep(tmp_path))
    configs = sweep.configs()
    assert len(configs) == 2 * 2 * 2  # strategies x epochs x seeds
    assert {(c.strategy, c.epochs, c.seed) for c in configs} == {(s, e, k) for s in ("finetune", "joint") for e in (1, 2) for k in (0, 1)}
    hashes = [config_hash(c) for c in configs]
    assert len(set(hashes)) == len(hashes)  # different config, different folder
    again = Sweep.from_file(write_sweep(tmp_path)).configs()
    assert [config_hash(c) for c in again] == hashes  # same config, same folder
    assert config_hash(configs[0].override({"lr": 0.5})) != hashes[0]


def test_grid_over_strategy_parameters_labels_the_runs(tmp_path):
    register(Strategy("toy-grid", "test only", defaults={"lam": 1.0}))
    try:
        sweep = Sweep.from_dict({"seeds": [3], "strategies": {"toy-grid": {"lam": [1.0, 10.0]}}})
        labels = sorted(c.label for c in sweep.configs())
        assert labels == ["toy-grid[lam=1.0]", "toy-grid[lam=10.0]"]
        assert sorted(c.params["lam"] for c in sweep.configs()) == [1.0, 10.0]
    finally:
        del STRATEGIES["toy-grid"]


def test_list_settings_in_a_sweep_are_text_or_a_list_of_lists():
    """A list expands the grid, so a list-valued setting (increments, milestones, classes) is given
    as text, or as a list of lists to sweep over several."""
    sweep = Sweep.from_dict({"seeds": [0], "base": {"increments": "4,3,3", "lr_schedule": "step", "epochs": 3,
                                                    "milestones": [[1], [1, 2]]}, "strategies": {"finetune": {}}})
    configs = sweep.configs()
    assert [c.increments for c in configs] == [[4, 3, 3]] * 2 and [c.milestones for c in configs] == [[1], [1, 2]]
    assert all(c.num_experiences == 3 for c in configs)


@pytest.mark.parametrize("obj, message", [
    ({"strategies": {}}, "at least one strategy"),
    ({"strategies": {"finetune": {}}, "seeds": 0}, "seeds=0"),
    ({"strategies": {"finetune": {}}, "sedes": 3}, "unknown key 'sedes'"),
    ({"strategies": {"finetune": {"lam": [1, 2]}}}, "unknown setting 'lam'"),
    ({"strategies": {"nope": {}}}, "unknown strategy 'nope'"),
    ({"strategies": {"finetune": {}}, "base": {"epochs": "many"}}, "epochs='many' is not a valid int"),
])
def test_bad_sweeps_are_clear_errors(obj, message):
    with pytest.raises(ContinualError, match=message):
        Sweep.from_dict(obj).configs()


def test_sweep_runs_then_skips_finished_runs(tmp_path, capsys):
    f = write_sweep(tmp_path)
    assert main(["sweep", str(f), "--quiet", "--set", "seeds=1"]) == 0
    folders = sorted((tmp_path / "out").iterdir())
    assert len(folders) == 4
    for d in folders:
        cfg = json.loads((d / "config.json").read_text())
        assert d.name == config_hash(RunConfig(**cfg))
        assert load_result(d / "result.json").config == cfg
        assert not (d / "checkpoints").exists()
    stamps = {d: (d / "result.json").stat().st_mtime_ns for d in folders}
    assert main(["sweep", str(f), "--quiet", "--set", "seeds=1"]) == 0
    assert "0 run, 4 skipped, 0 failed" in capsys.readouterr().out
    assert stamps == {d: (d / "result.json").stat().st_mtime_ns for d in folders}


class Boom(Plugin):
    def before_experience(self, model, experience):
        raise RuntimeError("boom in before_experience")


def test_a_failed_run_does_not_stop_the_others(tmp_path):
    register(Strategy("toy-fail", "test only", make_plugins=lambda p, c: [Boom()]))
    try:
        sweep = Sweep.from_dict({"out": str(tmp_path), "seeds": 1, "base": {"epochs": 1, "device": "cpu"},
                                 "strategies": {"toy-fail": {}, "finetune": {}}})
        outcomes = run_sweep(sweep)
        assert [o.status for o in outcomes] == ["failed", "done"]
        assert "boom in before_experience" in outcomes[0].error
        assert "boom" in (outcomes[0].folder / "error.txt").read_text()
    finally:
        del STRATEGIES["toy-fail"]


def test_process_pool_gives_the_same_results(tmp_path):
    obj = {"seeds": 2, "base": {"epochs": 1, "device": "cpu"}, "strategies": {"finetune": {}}}
    seq = run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / "a")}))
    pool = run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / "b")}), workers=2)
    for a, b in zip(seq, pool):
        assert a.folder.name == b.folder.name
        assert load_result(a.folder / "result.json").acc_matrix == load_result(b.folder / "result.json").acc_matrix


def test_pool_workers_share_the_cores(tmp_path):
    from continual.experiment import choose_threads

    obj = {"out": str(tmp_path), "seeds": 2, "base": {"epochs": 1, "device": "cpu"}, "strategies": {"finetune": {}}}
    outcomes = run_sweep(Sweep.from_dict(obj), workers=2)
    for o in outcomes:
        assert load_result(o.folder / "result.json").environment["torch_threads"] == choose_threads("mlp", workers=2)
    again = run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / "b")}), workers=2, threads=2)
    assert all(load_result(o.folder / "result.json").environment["torch_threads"] == 2 for o in again)


def test_ray_engine_runs_a_two_configuration_sweep(tmp_path):
    pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    sweep = Sweep.from_dict({"out": str(tmp_path), "seeds": 1, "base": {"epochs": 1, "device": "cpu"},
                             "strategies": {"finetune": {}, "joint": {}}})
    outcomes = run_sweep(sweep, engine="ray")
    assert [o.status for o in outcomes] == ["done", "done"]
    local = run(sweep.configs()[0])
    assert load_result(outcomes[0].folder / "result.json").acc_matrix == local.acc_matrix


def cli(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return [sys.executable, "-m", "continual.cli", *args], dict(cwd=cwd, env=env)


def test_resume_after_sigkill_gives_the_same_matrix(tmp_path):
    args = ["run", "--strategy", "finetune", "--epochs", "120", "--momentum", "0.9", "--device", "cpu", "--quiet"]
    cmd, kw = cli(*args, "--out", "killed", cwd=tmp_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    from continual.cli import result_name

    name = result_name(RunConfig(strategy="finetune", epochs=120, momentum=0.9, device="cpu").resolve())
    ckpt = tmp_path / "killed" / ".checkpoints" / name
    deadline = time.time() + 120
    while not (ckpt / "checkpoint-0001.pt").exists():  # experiences 0 and 1 done: now in the third
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    result_file = tmp_path / "killed" / f"{name}.json"
    assert not result_file.exists()
    cmd, kw = cli(*args, "--out", "killed", cwd=tmp_path)
    subprocess.run(cmd, check=True, capture_output=True, **kw)  # the same command again: resumes
    resumed = load_result(result_file)
    assert resumed.extra.get("resumed") is True
    assert not ckpt.exists()  # checkpoints are removed once the result is saved
    cmd, kw = cli(*args, "--out", "whole", cwd=tmp_path)
    subprocess.run(cmd, check=True, capture_output=True, **kw)
    whole = load_result(tmp_path / "whole" / f"{name}.json")
    assert resumed.acc_matrix == whole.acc_matrix and resumed.random_init == whole.random_init


@pytest.mark.parametrize("setting", [
    {"scenario": "class"},  # growing head (the class-incremental default): the optimizer's groups are rebuilt
    {"scenario": "task", "head": "multi"},
    {"scenario": "class", "head": "fixed", "optimizer": "adam", "lr": 0.001},
])
def test_corrupted_checkpoint_repeats_only_that_experience(tmp_path, setting):
    cfg = RunConfig(strategy="finetune", epochs=2, momentum=0.9, device="cpu").override(setting)
    whole = run(cfg)
    run(cfg, checkpoint_dir=tmp_path)
    newest = sorted(tmp_path.glob("checkpoint-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    trained = []
    problems = []
    resumed = run(cfg, checkpoint_dir=tmp_path, on_problem=problems.append,
                  callbacks=[lambda e, info: trained.append(info["index"]) if e == "experience_start" else None])
    assert trained == [4]  # only the experience whose checkpoint was lost is repeated
    assert len(problems) == 1 and newest.name in problems[0]
    assert resumed.acc_matrix == whole.acc_matrix


def test_checkpoint_of_another_configuration_is_ignored(tmp_path):
    run(RunConfig(strategy="finetune", epochs=1, device="cpu"), checkpoint_dir=tmp_path)
    problems = []
    other = RunConfig(strategy="finetune", epochs=2, device="cpu")
    r = run(other, checkpoint_dir=tmp_path, on_problem=problems.append)
    assert "resumed" not in r.extra and problems and "another configuration" in problems[0]


def test_compare_on_hand_written_results(tmp_path, capsys):
    for s, final in enumerate([0.6, 0.7, 0.8]):
        save_result(fake("ewc", s, final), tmp_path / f"ewc{s}.json")
    save_result(fake("finetune", 0, 0.1), tmp_path / "ft.json")
    (tmp_path / "broken.json").write_text('{"schema": "continual.result", "version": 1}')
    assert main(["compare", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "broken.json" in err and "missing key" in err
    # final accuracy = mean of (0.5 + final) / 2 over seeds = 0.60 +- t(2) * sd / sqrt(3)
    assert "60.0 ± 12.4" in out
    md = (tmp_path / "compare.md").read_text()
    assert "| b | class | ewc | 3 | 60.0 ± 12.4 |" in md
    csv = (tmp_path / "compare.csv").read_text().splitlines()
    assert csv[0].startswith("benchmark,scenario,strategy,seeds,final_average_accuracy_mean,final_average_accuracy_ci95")
    assert (tmp_path / "curves_b_class.png").exists()


# ------------------------------------------------------------------- checksums and incomplete checkpoints
def _flip_a_weight(path):
    """Flip the exponent's top bit of a model weight inside the file (torch reads it without complaint)."""
    state = torch.load(path, weights_only=True)
    weight = next(v for v in state["trainer"]["model"].values() if v.numel() >= 16)
    data = bytearray(path.read_bytes())
    at = data.find(weight.reshape(-1)[:16].numpy().tobytes())
    assert at > 0
    data[at + 3] ^= 0x40
    path.write_bytes(data)


def _resave(path, edit, *, checksum=True):
    state = torch.load(path, weights_only=True)
    state.pop("sha256", None)
    edit(state)
    if checksum:
        atomic_torch_save(state, path, checksum=True)  # a valid digest: only the structure is wrong
    else:
        torch.save(state, path)


@pytest.fixture(scope="module")
def finetune_run():
    cfg = RunConfig(strategy="finetune", epochs=2, momentum=0.9, device="cpu")
    return cfg, run(cfg)


@pytest.mark.parametrize("damage, reason", [
    (_flip_a_weight, "checksum mismatch (the file changed after it was written)"),
    (lambda p: _resave(p, lambda s: None, checksum=False), "no checksum (written before checksums were stored)"),
    (lambda p: _resave(p, lambda s: s["trainer"].pop("generator")), "incomplete checkpoint (no 'generator' in the trainer state)"),
    (lambda p: _resave(p, lambda s: s.pop("acc_matrix")), "incomplete checkpoint (no square 'acc_matrix')"),
    (lambda p: _resave(p, lambda s: s["trainer"]["plugins"].append(None)), "incomplete checkpoint (2 plugin states for 1 plugins)"),
    (lambda p: _resave(p, lambda s: s["trainer"].update(torch_rng=s["trainer"]["torch_rng"][:10])),
     "incomplete checkpoint (a trainer 'torch_rng' state of another size)"),
], ids=["flipped-byte", "no-checksum", "no-generator", "no-acc_matrix", "plugin-count", "short-rng"])
def test_a_checkpoint_that_fails_verification_falls_back_to_the_one_before(tmp_path, finetune_run, damage, reason):
    cfg, whole = finetune_run
    run(cfg, checkpoint_dir=tmp_path)
    newest = sorted(tmp_path.glob("checkpoint-*.pt"))[-1]
    damage(newest)
    trained, problems = [], []
    resumed = run(cfg, checkpoint_dir=tmp_path, on_problem=problems.append,
                  callbacks=[lambda e, info: trained.append(info["index"]) if e == "experience_start" else None])
    assert trained == [4]  # only the experience whose checkpoint failed is repeated
    assert problems == [f"{newest}: {reason}, using the one before"]
    assert resumed.acc_matrix == whole.acc_matrix


# ------------------------------------------------------------------------------------------- locks
def test_a_second_process_of_the_same_run_stops_with_one_line(tmp_path):
    args = ["run", "--strategy", "finetune", "--epochs", "100000", "--device", "cpu", "--quiet", "--out", "o"]
    cmd, kw = cli(*args, cwd=tmp_path)
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    from continual.cli import result_name

    name = result_name(RunConfig(strategy="finetune", epochs=100000, device="cpu").resolve())
    try:
        folder = Path("o") / ".checkpoints" / name
        lock = tmp_path / folder / ".lock"
        deadline = time.time() + 120
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):  # the first holds the lock
            assert first.poll() is None and time.time() < deadline, "the first run ended before the second started"
            time.sleep(0.01)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
        assert first.poll() is None, "the first run ended before the second finished: nothing was checked"
        assert second.returncode == 2
        assert second.stderr == f"continual: error: run {name} is already in progress in {folder} (pid {first.pid})\n"
        assert not (tmp_path / "o" / f"{name}.json").exists()
    finally:
        first.kill()
        first.wait()
    assert FolderLock(tmp_path / folder).acquire()  # a killed holder leaves the folder free


def _small_sweep(out, strategies=("finetune",)):
    return Sweep.from_dict({"out": str(out), "seeds": 1, "base": {"epochs": 1, "num_experiences": 2, "device": "cpu"},
                            "strategies": {s: {} for s in strategies}})


def test_a_sweep_leaves_a_run_another_process_holds_to_it(tmp_path, capsys):
    f = tmp_path / "sweep.toml"
    f.write_text(f'out = "{tmp_path / "out"}"\n[base]\nepochs = 1\nnum_experiences = 2\ndevice = "cpu"\n'
                 "[strategies]\nfinetune = {}\njoint = {}\n")
    held, other = [run_dir(tmp_path / "out", c) for c in Sweep.from_file(f).configs()]
    with FolderLock(held, what="test"):  # flock excludes another open file of this process as it does another process
        assert main(["sweep", str(f), "--quiet"]) == 1
        assert not (held / "result.json").exists() and (other / "result.json").exists()
    out, err = capsys.readouterr()
    assert "1 run, 0 skipped, 0 failed, 1 in progress in another process" in out
    assert err.endswith(f"\ncontinual: run {held} is in progress in another process (pid {os.getpid()})\n")
    outcomes = run_sweep(Sweep.from_file(f), workers=2)  # the pool takes it up once it is free
    assert [o.status for o in outcomes] == ["done", "skipped"]
    assert sorted(p.name for p in held.iterdir()) == ["config.json", "result.json"]  # no lock file, no checkpoints


# ------------------------------------------------------------------------ what a kill leaves behind
def test_the_next_run_removes_the_temporary_files_a_kill_left(tmp_path):
    out = tmp_path / "runs"
    from continual.cli import result_name

    name = result_name(RunConfig(strategy="finetune", epochs=1, num_experiences=2, device="cpu").resolve())
    (out / ".checkpoints" / name).mkdir(parents=True)
    (out / f".{name}.json.k1ll3d.tmp").write_text('{"schema"')
    (out / ".checkpoints" / name / ".checkpoint-0001.pt.k1ll3d.tmp").write_bytes(b"PK")
    (out / ".another-run.json.wr1t1ng.tmp").write_text("{")  # another run's write, maybe in progress: left alone
    assert main(["run", "--epochs", "1", "--num-experiences", "2", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.rglob("*")) == [".another-run.json.wr1t1ng.tmp", f"{name}.json"]


def test_a_sweep_removes_a_finished_runs_leftover_checkpoints_and_temporaries(tmp_path):
    [done] = run_sweep(_small_sweep(tmp_path))
    (done.folder / "checkpoints").mkdir()
    (done.folder / "checkpoints" / "checkpoint-0001.pt").write_bytes(b"left by a kill after the result was saved")
    (done.folder / ".result.json.k1ll3d.tmp").write_text("{")
    (done.folder / ".config.json.k1ll3d.tmp").write_text("{")
    [again] = run_sweep(_small_sweep(tmp_path))
    assert again.status == "skipped"
    assert sorted(p.name for p in done.folder.iterdir()) == ["config.json", "result.json"]


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1 (Connection refused, waited up to 10 s)"),
    ("ray://127.0.0.1:1", "no Ray cluster answers at ray://127.0.0.1:1"),
    ("127.0.0.1", "Ray address '127.0.0.1' is not accepted; expected HOST:PORT"),
    ("127.0.0.1:99999", "is not accepted"),
])
def test_an_unreachable_ray_address_is_one_line_not_an_endless_retry(tmp_path, address, message):
    from continual.sweep import check_ray_address

    with pytest.raises(ContinualError, match=re.escape(message)):
        check_ray_address(address)
    check_ray_address(None)  # a new local instance: left to Ray
    sweep = Sweep.from_dict({"out": str(tmp_path / "out"), "base": {"epochs": 1, "device": "cpu"}, "strategies": {"finetune": {}}})
    with pytest.raises(ContinualError, match=re.escape(message)):
        run_sweep(sweep, engine="ray", address=address)
    assert not (tmp_path / "out").exists()  # nothing written


def test_sweep_files_that_are_folders_or_not_text_and_too_many_seeds(tmp_path, capsys):
    (tmp_path / "bin.toml").write_bytes(b"out = \xff\n")
    for path, message in ((tmp_path, f"{tmp_path} is a folder; give a sweep file (TOML)"),
                          (tmp_path / "bin.toml", "not a text file (byte 6 is not UTF-8)")):
        assert main(["sweep", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    with pytest.raises(ContinualError, match=r"seeds=99999999999 is out of range: expected 1\.\.10000"):
        Sweep.from_dict({"seeds": 99999999999, "strategies": {"finetune": {}}})
    with pytest.raises(ContinualError, match=r"seed=-1 is out of range"):
        Sweep.from_dict({"seeds": [-1], "strategies": {"finetune": {}}}).configs()
    f = write_sweep(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["sweep", str(f), "--set", f"out={tmp_path / 'afile'}"]) == 2
    assert "the sweep's out" in capsys.readouterr().err


def test_a_ray_sweep_leaves_the_device_to_the_workers(tmp_path):
    sweep = Sweep.from_dict({"out": str(tmp_path), "base": {"device": "cuda:5"}, "strategies": {"finetune": {}}})
    assert [c.device for c in sweep.configs(here=False)] == ["cuda:5"]


# ----------------------------------------------------------------- seeds trained together
BATCHED_SWEEP = {"seeds": 3, "base": {"epochs": 1, "device": "cpu"},
                 "strategies": {"finetune": {}, "a-gem": {}}}


def test_a_batched_sweep_trains_each_configurations_seeds_together(tmp_path):
    """``batched="on"``: finetune's three seeds train as one unit (noted in each result, which
    agrees with the seed's run alone to the batched products' rounding: test_batched's bound),
    a-gem's train one at a time with the reason given once; a restart skips them all, and a seed
    whose result is gone trains alone."""
    notes = []
    sweep = Sweep.from_dict({**BATCHED_SWEEP, "out": str(tmp_path)})
    outcomes = run_sweep(sweep, batched="on", on_note=notes.append)
    assert [o.status for o in outcomes] == ["done"] * 6
    assert len(notes) == 1 and notes[0].startswith("a-gem: training the seeds one at a time: strategy 'a-gem' is not batched")
    results = [load_result(o.folder / "result.json") for o in outcomes]
    assert [r.extra.get("batched", {}).get("seeds") for r in results] == [3, 3, 3, None, None, None]
    assert not any((o.folder / "checkpoints-batched").exists() or (o.folder / "checkpoints").exists() for o in outcomes)
    for r in results[:3]:
        alone = run(RunConfig(**r.config))
        assert abs(r.metrics["final_average_accuracy"] - alone.metrics["final_average_accuracy"]) <= 0.005
        assert all(abs(x - y) <= 0.015 for a, b in zip(r.acc_matrix, alone.acc_matrix) for x, y in zip(a, b))
    assert [o.status for o in run_sweep(sweep, batched="on")] == ["skipped"] * 6
    (outcomes[1].folder / "result.json").unlink()
    again = run_sweep(sweep, batched="on")
    assert [o.status for o in again] == ["skipped", "done"] + ["skipped"] * 4
    redone = load_result(outcomes[1].folder / "result.json")
    assert "batched" not in redone.extra and redone.acc_matrix == run(RunConfig(**redone.config)).acc_matrix


def test_batched_sweeps_auto_off_and_the_pool(tmp_path):
    """``"auto"`` batches on CUDA only (so not here), ``"off"`` never; in a process pool a group
    is one job and gives what the sequential batched sweep gives."""
    obj = {"seeds": 2, "base": {"epochs": 1, "device": "cpu"}, "strategies": {"finetune": {}}}
    for mode in ("auto", "off"):
        outcomes = run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / mode)}), batched=mode)
        assert all("batched" not in load_result(o.folder / "result.json").extra for o in outcomes)
    seq = run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / "seq")}), batched="on", threads=1)
    pool = run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / "pool")}), batched="on", workers=2, threads=1)
    for a, b in zip(seq, pool):
        ra, rb = load_result(a.folder / "result.json"), load_result(b.folder / "result.json")
        assert ra.extra["batched"]["seeds"] == 2 and ra.acc_matrix == rb.acc_matrix
    with pytest.raises(ContinualError, match="unknown batched='yes'; expected one of auto, on, off"):
        run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / "bad")}), batched="yes")


def test_a_batched_sweep_resumes_its_groups_checkpoints(tmp_path):
    """A group killed after experience 2 (its checkpoints in the first seed's folder) resumes
    there when the sweep is started again, to the results of an uninterrupted batched sweep."""
    from continual.batched import run_batched

    obj = {"seeds": 2, "base": {"epochs": 1, "device": "cpu"}, "strategies": {"ewc": {}}}
    whole = run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / "whole")}), batched="on")
    sweep = Sweep.from_dict({**obj, "out": str(tmp_path / "killed")})
    configs = sweep.configs()
    first = run_dir(sweep.out, configs[0])

    def crash(event, info):
        if event == "experience_end" and info["index"] == 2:
            raise KeyboardInterrupt  # as a kill would stop it: after experience 2's checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_batched(configs[0], [0, 1], checkpoint_dir=first / "checkpoints-batched", callbacks=[crash])
    outcomes = run_sweep(sweep, batched="on")
    assert [o.status for o in outcomes] == ["done", "done"]
    for a, b in zip(whole, outcomes):
        ra, rb = load_result(a.folder / "result.json"), load_result(b.folder / "result.json")
        assert rb.extra["resumed"] is True and "resumed" not in ra.extra
        assert ra.acc_matrix == rb.acc_matrix and ra.penalties == rb.penalties
    assert not (first / "checkpoints-batched").exists()


def test_a_sweep_logs_every_run_under_out_logs(tmp_path, capsys):
    """``--log csv``: one CSV per run (seeds trained together too, each its own) in ``out/logs``,
    holding the rows and final metrics its result file holds; Ray runs are refused in one line."""
    from continual.loggers import read_csv
    from continual.sweep import log_name

    obj = {"out": str(tmp_path / "out"), "seeds": 2, "base": {"epochs": 1, "device": "cpu", "num_experiences": 3},
           "strategies": {"finetune": {}, "er-ace": {"mem": 50}}}
    outcomes = run_sweep(Sweep.from_dict(obj), batched="on", log="csv")
    assert [o.status for o in outcomes] == ["done"] * 4
    for o in outcomes:
        result = load_result(o.folder / "result.json")
        records = read_csv(tmp_path / "out" / "logs" / "csv" / f"{log_name(o.config, o.folder)}.csv")
        rows = {(r.step, r.key): r.value for r in records if r.key.startswith("accuracy/")}
        assert rows == {(i, f"accuracy/experience_{j}"): v for i, row in enumerate(result.acc_matrix) for j, v in enumerate(row)}
        metric = [r.value for r in records if r.key == "metrics/final_average_accuracy"]
        assert metric == [result.metrics["final_average_accuracy"]]
        assert sum(r.key == "train/loss" for r in records) == 3  # one epoch in each of 3 experiences
    with pytest.raises(ContinualError, match="unknown logger 'nope'; expected tensorboard, wandb or csv"):
        run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / "bad")}), log="nope")
    with pytest.raises(ContinualError, match="--log with --engine ray"):
        run_sweep(Sweep.from_dict({**obj, "out": str(tmp_path / "ray")}), log="csv", engine="ray")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "ray").exists()
