import json
import re
import subprocess
import sys
from unittest import mock

import pytest

from continual.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "split-digits" in out and "finetune" in out and "joint" in out and "cumulative" in out


def test_run_then_plot(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "--strategy", "finetune", "--seeds", "2", "--epochs", "1", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert [re.sub("_[0-9a-f]{10}_", "_HASH_", f) for f in files] == ["split-digits_class_finetune_HASH_seed0.json",
                                                                    "split-digits_class_finetune_HASH_seed1.json"]
    assert files[0].split("_")[3] == files[1].split("_")[3]  # the seeds of one configuration share the hash
    table = capsys.readouterr().out
    assert "finetune" in table and "final acc" in table
    assert json.loads((out / files[0]).read_text())["config"]["epochs"] == 1
    assert main(["plot", str(out)]) == 0
    assert (out / "curves_split-digits_class.png").exists()


def test_seeds_in_parallel_processes_give_the_results_of_one_process(tmp_path, capsys):
    """``--workers 2``: the seeds run in two spawned processes (one thread each, as alone: an MLP
    takes one), so each seed's matrix is the one-process run's, bit for bit, in seed order."""
    argv = ["run", "--strategy", "ewc", "--seeds", "3", "--epochs", "1", "--device", "cpu", "--quiet", "--batched", "off"]
    assert main(argv + ["--out", str(tmp_path / "one")]) == 0
    assert main(argv + ["--out", str(tmp_path / "pool"), "--workers", "2"]) == 0
    one, pool = sorted((tmp_path / "one").glob("*.json")), sorted((tmp_path / "pool").glob("*.json"))
    assert [p.name for p in one] == [p.name for p in pool] and len(one) == 3
    for a, b in zip(one, pool):
        ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
        assert ra["acc_matrix"] == rb["acc_matrix"] and ra["penalties"] == rb["penalties"]
    assert not (tmp_path / "pool" / ".checkpoints").exists()
    assert main(argv + ["--out", str(tmp_path / "bad"), "--workers", "0"]) == 2
    assert "--workers 0 is out of range: expected 1..256" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--seeds", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in ("finetune", "joint", "cumulative"):
        assert name in out
    assert (tmp_path / "curves_split-digits_class.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["run", "--benchmark", "split-nope"], "unknown benchmark 'split-nope'; expected one of split-digits"),
    (["run", "--strategy", "ewk"], "unknown strategy 'ewk'; expected one of finetune"),
    (["run", "--scenario", "domain"], "no scenario 'domain'; expected one of class, task"),
    (["run", "--set", "lam=3"], "unknown setting 'lam'; accepted:"),
    (["run", "--set", "epochs=many"], "epochs='many' is not a valid int"),
    (["run", "--epochs", "x"], "invalid int value"),
    (["plot", "/nonexistent/dir"], "no valid results files"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_line(argv, message, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path)] if argv[0] == "run" else [])) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_unavailable_device(capsys, tmp_path):
    import torch

    assert main(["run", "--device", "cuda:99", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    expected = "CUDA is not available" if not torch.cuda.is_available() else "cuda:99"
    assert expected in err and err.count("\n") == 1


def test_console_script_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "continual.cli", "run", "--benchmark", "nope"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("continual: error: unknown benchmark 'nope'") and "Traceback" not in proc.stderr


def test_runs_that_differ_in_a_setting_never_overwrite_each_other(tmp_path, capsys):
    out = tmp_path / "runs"
    common = ["run", "--strategy", "finetune", "--epochs", "1", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(common + ["--lr", "0.05"]) == 0
    assert main(common + ["--lr", "0.01"]) == 0
    files = sorted(out.glob("*.json"))
    assert len(files) == 2 and {json.loads(f.read_text())["config"]["lr"] for f in files} == {0.05, 0.01}
    capsys.readouterr()
    assert main(["compare", str(out)]) == 0
    table = capsys.readouterr().out
    assert "finetune [lr=0.01]" in table and "finetune [lr=0.05]" in table  # two rows, each one seed


def test_compare_and_plot_group_by_configuration_not_label(tmp_path, capsys):
    """A sweep over num_experiences (one label, matrices of two sizes) is two groups."""
    out = tmp_path / "runs"
    for n in ("3", "5"):
        assert main(["run", "--strategy", "finetune", "--epochs", "1", "--num-experiences", n, "--seeds", "2",
                     "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(out)]) == 0
    table = capsys.readouterr().out
    assert "finetune [num_experiences=3]" in table and "finetune [num_experiences=5]" in table
    assert main(["plot", str(out)]) == 0


def test_threads_default_per_model_and_as_asked(tmp_path):
    import torch

    from continual.experiment import THREADS, available_cores, choose_threads
    from continual.results import load_result

    assert choose_threads("mlp") == min(THREADS["mlp"], available_cores())
    with mock.patch("continual.experiment.available_cores", return_value=8):
        with mock.patch("os.getloadavg", return_value=(0.1, 0.0, 0.0)):
            assert choose_threads("resnet18") == 8  # quiet: every core
            assert choose_threads("convnet", workers=4) == 2  # workers share the cores
        with mock.patch("os.getloadavg", return_value=(2.6, 0.0, 0.0)):
            assert choose_threads("convnet") == 5  # the idle ones
        with mock.patch("os.getloadavg", return_value=(40.0, 0.0, 0.0)):
            assert choose_threads("convnet") == 1
    assert choose_threads("mlp", requested=3) == 3
    before = torch.get_num_threads()
    try:
        assert main(["run", "--epochs", "1", "--device", "cpu", "--threads", "2", "--out", str(tmp_path), "--quiet"]) == 0
    finally:
        torch.set_num_threads(before)
    (result,) = tmp_path.glob("*.json")
    assert load_result(result).environment["torch_threads"] == 2


@pytest.mark.parametrize("command", [["run"], ["demo"], ["pretrain", "--out", "x.pt"]])
def test_threads_below_one_is_a_one_line_error(command, tmp_path, capsys):
    assert main([*command, "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--threads 0 must be at least 1" in err


@pytest.fixture
def odd_paths(tmp_path):
    """A file, a symbolic link to it, a folder and a broken link, as --out values meet them."""
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "alink").symlink_to(tmp_path / "afile")
    (tmp_path / "adir").mkdir()
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    return tmp_path


DEVICES_THIS_BUILD_CANNOT_USE = ["meta", "mps", "xla", "hip", "xpu", "vulkan", "ipu", "privateuseone", "lazy"]


@pytest.mark.parametrize("argv, message", [
    # paths: the name or kind of --out ("{tmp}" is the test's folder)
    (["run", "--out", "{tmp}/afile"], "--out '{tmp}/afile' is a file, not a folder"),
    (["run", "--out", "{tmp}/afile/sub"], "'{tmp}/afile' is a file, not a folder; give a path through folders only"),
    (["run", "--out", "{tmp}/alink"], "--out '{tmp}/alink' is a file, not a folder"),
    (["run", "--out", "{tmp}/broken"], "is a broken symbolic link"),
    (["run", "--out", "{tmp}/" + "x" * 300], "is 300 bytes long; this file system allows"),
    (["run", "--out", "{tmp}/" + "/".join(["d" * 200] * 25)], "for a whole path"),
    (["run", "--out", ""], "--out '' is empty"),
    (["pretrain", "--out", "{tmp}/adir"], "--out '{tmp}/adir' is a folder; give a file name such as {tmp}/adir/pretrained.pt"),
    (["pretrain", "--out", ""], "--out '' is empty; give a file name"),
    (["pretrain", "--out", "{tmp}/afile/net.pt"], "'{tmp}/afile' is a file, not a folder"),
    (["pretrain", "--out", "{tmp}/" + "p" * 250 + ".pt"], "bytes with its temporary suffix"),
    (["pretrain", "--out", "{tmp}/net.pt", "--lr", "1e308"], "lr=1e+308 is out of range"),
    (["compare", "{tmp}/adir", "--out", "{tmp}/afile"], "--out '{tmp}/afile' is a file, not a folder"),
    (["plot", "{tmp}/adir", "--out", "{tmp}/afile"], "--out '{tmp}/afile' is a file, not a folder"),
    (["demo", "--out", "{tmp}/afile"], "--out '{tmp}/afile' is a file, not a folder"),
    (["demo", "--out", "{tmp}/demo", "--seeds", "0"], "--seeds 0 is out of range: expected 1..10000"),
    (["demo", "--out", "{tmp}/demo", "--seeds", "-1"], "--seeds -1 is out of range: expected 1..10000"),
    (["demo", "--out", "{tmp}/demo", "--device", "meta"], "device 'meta' is not supported"),
    (["sweep", "{tmp}/adir"], "{tmp}/adir is a folder; give a sweep file (TOML)"),
    # devices PyTorch knows but this build cannot use
    *[(["run", "--device", d], f"device '{d}' is not supported (type '{d}'); expected auto, cpu, cuda or cuda:N")
      for d in DEVICES_THIS_BUILD_CANNOT_USE],
    (["run", "--set", "device=meta"], "device 'meta' is not supported"),
    # numbers out of range
    (["run", "--seed", "99999999999999999999"], "seed=99999999999999999999 is out of range: expected in [0, 9223372036854775807]"),
    (["run", "--seed", "-9223372036854775809"], "seed=-9223372036854775809 is out of range"),
    (["run", "--seed", "-1"], "seed=-1 is out of range"),
    (["run", "--seed", "9223372036854775807", "--seeds", "2"], "--seed 9223372036854775807 with --seeds 2 is out of range"),
    (["run", "--seeds", "99999999999"], "--seeds 99999999999 is out of range: expected 1..10000"),
    (["run", "--momentum", "-1"], "momentum=-1.0 is out of range: expected in [0, 1)"),
    (["run", "--set", "weight_decay=-1"], "weight_decay=-1.0 is out of range: expected in [0, "),
    (["run", "--lr", "1e308"], "lr=1e+308 is out of range: expected in (0, 3.40282e+37]"),
    (["run", "--lr", "0"], "lr=0.0 is out of range"),
    (["run", "--epochs", "0"], "epochs=0 is out of range: expected >= 1"),
    (["run", "--batch-size", "0"], "batch_size=0 is out of range: expected >= 1"),
    # accepted silently before
    (["run", "--num-experiences", "0"], "num_experiences=0 is out of range: expected >= 1"),
    (["run", "--set", "num_experiences=0"], "num_experiences=0 is out of range: expected >= 1"),
    (["run", "--num-experiences", "11"], "has 10 classes, so expected 1..10"),
    (["run", "--scenario", ""], "has no scenario ''; expected one of class, task"),
    (["run", "--model", ""], "unknown model ''; expected one of mlp"),
    (["run", "--head", ""], "unknown head ''; expected one of fixed"),
    # strategy settings and heads
    (["run", "--strategy", "replay", "--set", "mem=0"], "replay.mem=0 is out of range: expected >= 1"),
    (["run", "--strategy", "ewc", "--set", "lam=-1"], "ewc.lam=-1.0 is out of range: expected >= 0"),
    *[(["run", "--strategy", s, "--head", "incremental-mask-past"], f"but strategy '{s}' trains on past classes")
      for s in ("replay", "der++", "lwf", "ewc+replay")],
    # data
    (["run", "--data-root", "{tmp}/missing"], "data root '{tmp}/missing' does not exist"),
    (["run", "--benchmark", "split-mnist", "--data-root", "{tmp}/afile"], "data root '{tmp}/afile' is a file"),
])
def test_odd_arguments_are_one_line_errors_before_anything_runs(argv, message, odd_paths, capsys):
    tmp = str(odd_paths)
    argv = [a.replace("{tmp}", tmp) for a in argv]
    if argv[0] == "run" and "--out" not in argv:
        argv += ["--out", f"{tmp}/runs"]
    before = sorted(p.name for p in odd_paths.iterdir())
    assert main(argv + (["--quiet"] if argv[0] in ("run", "demo") else [])) == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", tmp) in err
    assert err.count("\n") == 1 and err.startswith("continual: error: ") and "Traceback" not in err
    assert sorted(p.name for p in odd_paths.iterdir()) == before  # nothing written


def test_a_replay_buffer_too_large_for_memory_says_what_it_needs(tmp_path, capsys):
    argv = ["run", "--strategy", "replay", "--set", "mem=99999999999", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "a reservoir buffer of mem=99999999999 samples (80 bytes each) needs 8.0 TB on cpu, but " in err
    assert "is available; lower mem" in err and err.count("\n") == 1


def test_the_default_ewc_run_does_not_diverge(tmp_path, capsys):
    assert main(["run", "--strategy", "ewc", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path), "--quiet"]) == 0


def test_a_long_label_still_gives_a_file_name_the_file_system_takes():
    from continual import RunConfig
    from continual.cli import result_name

    a, b = (RunConfig(label="L" * 255 + tail).resolve() for tail in ("a", "b"))
    assert len(result_name(a) + ".json") + len("..12345678.tmp") < 255  # the label is cut; the hash keeps them apart
    assert result_name(a) != result_name(b)


def test_three_classes_grown_to_five_is_one_command(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "--classes", "0,1,2,3,4", "--increments", "3,2", "--epochs", "2", "--device", "cpu", "--out", str(out),
                 "--quiet"]) == 0
    r = json.loads(next(out.glob("*.json")).read_text())
    assert r["extra"]["head"]["sizes"] == [3, 5] and r["config"]["classes"] == [0, 1, 2, 3, 4] and r["test_sizes"][0] > r["test_sizes"][1]
    assert r["provenance"]["classes_per_experience"] == [3, 2]


def test_a_class_il_protocol_run_records_what_papers_report(tmp_path, capsys):
    """B m Inc n, a fixed-total herding memory, a growing head, WA, both classifiers, a cosine
    schedule and weight decay, from one command; the result carries item 5 of issue 13."""
    out = tmp_path / "runs"
    assert main(["run", "--split", "B4-Inc2", "--strategy", "replay+wa", "--set", "buffer=class-balanced", "--set", "selection=herding",
                 "--set", "mem=100", "--classifier", "both", "--lr-schedule", "cosine", "--weight-decay", "0.0001", "--class-order", "icarl",
                 "--epochs", "2", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "replay+wa[" in table and "(linear)" in table and "(nme)" in table and "avg inc acc" in table and "last acc" in table
    r = json.loads(next(out.glob("*.json")).read_text())
    assert len(r["acc_matrix"]) == 4 and r["extra"]["head"]["sizes"] == [4, 6, 8, 10]
    m = r["metrics"]
    assert 0 < m["last_accuracy"] <= 1 and 0 < m["average_incremental_accuracy"] <= 1
    assert len(r["classifiers"]["nme"]["acc_matrix"]) == 4 and "last_accuracy" in r["classifiers"]["nme"]["metrics"]
    steps = r["extra"]["by_step"]
    assert steps["old"][0] is None and len(steps["seen"]) == 4 and steps["seen"][-1] == pytest.approx(m["last_accuracy"], abs=1e-9)
    memory = r["extra"]["memory"]
    assert memory["exemplars"] == 100 * (64 + 16) and memory["model_parameters"] > 0 and memory["total"] >= memory["exemplars"]
    p = r["provenance"]
    assert p["class_order"]["name"] == "icarl" and p["class_order"]["seed"] == 1993 and p["seed"] == 0
    assert p["lr_schedule"] == "cosine" and p["weight_decay"] == 0.0001 and p["classifier"] == "both" and p["head"] == "incremental"
    assert p["memory"]["mem"] == 100 and p["memory"]["selection"] == "herding" and p["versions"]["torch"]
    assert r["extra"]["wa"]["gamma"][0] is None and len(r["extra"]["wa"]["gamma"]) == 4
