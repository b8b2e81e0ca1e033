"""Loggers write back exactly what the trainer emitted and the result file holds (continual.loggers).

The expectations are built here from the saved result file (read as plain JSON) and from the
events a recording callback saw, not from the loggers' own record functions.
"""

import json
import math
import struct
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from continual.cli import main
from continual.errors import ContinualError
from continual.experiment import RunConfig, run
from continual.loggers import (CSV_COLUMNS, CSVLogger, Logger, TensorBoardLogger, WandbLogger, check_loggers, close_all,
                               make_loggers, parse_kinds, read_csv, seed_callback)
from continual.results import load_result, save_result

CONFIG = dict(benchmark="split-digits", strategy="ewc", epochs=1, num_experiences=3, device="cpu")


# ------------------------------------------------------------------------------- helpers
def expected(result_file: Path, losses: list[tuple[int, int, float, int]] | None) -> dict[tuple[str, int], float]:
    """Every value a logger must write, by (key, step), from the result file and the epoch events seen."""
    r = json.loads(result_file.read_text())
    T = len(r["acc_matrix"])
    want = {}
    for n, (experience, epoch, loss, steps) in enumerate(losses or []):
        want[("train/loss", n)] = loss
        want[("train/steps", n)] = float(steps)
    for i, row in enumerate(r["acc_matrix"]):
        for j, v in enumerate(row):
            want[(f"accuracy/experience_{j}", i)] = v
    for j, v in enumerate(r["random_init"]):
        want[(f"random_init/experience_{j}", 0)] = v
    for name, values in r["penalties"].items():
        want.update({(f"penalty/{name}", i): v for i, v in enumerate(values)})
    for phase, value in r["timings"].items():
        if isinstance(value, list):
            want.update({(f"timings/{phase}", i): v for i, v in enumerate(value)})
        else:
            want[(f"timings/{phase}", T - 1)] = value
    for curve, values in r["extra"]["by_step"].items():
        want.update({(f"by_step/{curve}", i): v for i, v in enumerate(values) if v is not None})
    want.update({(f"metrics/{k}", T - 1): v for k, v in r["metrics"].items()})
    return want


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_logged(logged: list[tuple[str, int, float]], want: dict[tuple[str, int], float]) -> None:
    """``logged`` holds each expected value once, exactly, and nothing else."""
    counts = Counter((key, step) for key, step, _ in logged)
    assert [k for k, n in counts.items() if n > 1] == []
    got = {(key, step): value for key, step, value in logged}
    assert sorted(set(got) ^ set(want)) == []
    assert [k for k in want if not same(got[k], want[k])] == []


def csv_values(path: Path) -> list[tuple[str, int, float]]:
    return [(r.key, r.step, r.value) for r in read_csv(path)]


def tensorboard_values(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})  # 0: keep every value
    acc.Reload()
    values = [(tag, e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
              for tag in acc.Tags()["tensors"] if tag != "config/text_summary" for e in acc.Tensors(tag)]
    text = tensor_util.make_ndarray(acc.Tensors("config/text_summary")[0].tensor_proto)[0].decode()
    return values, text, acc.PluginTagToContent("hparams")


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline ``.wandb`` file (LevelDB log blocks of 32 KiB, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # the rest of a block, zero-padded
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, or the last piece of a record
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def wandb_records_when_written(path: Path, wait: float = 60.0) -> list:
    """The records of an offline run once W&B's service has written them all (its exit record):
    ``run.finish()`` returns before the service has flushed the file."""
    deadline = time.monotonic() + wait
    while True:
        records = wandb_records(path)
        if any(r.HasField("exit") for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One EWC run with the CSV and TensorBoard loggers and a recording callback; its result saved."""
    folder = tmp_path_factory.mktemp("logged")
    events = []
    loggers = make_loggers(["csv", "tensorboard"], folder / "logs", run_name="ewc0")
    result = run(RunConfig(**CONFIG), callbacks=[lambda e, i: events.append((e, dict(i))), *loggers])
    path = save_result(result, folder / "ewc0.json")
    for logger in loggers:
        logger.finish(result)
        logger.close()
    losses = [(i["experience"], i["epoch"], i["loss"], i["steps"]) for e, i in events if e == "epoch_end"]
    return folder, path, events, losses


# ------------------------------------------------------------------------------- CSV and TensorBoard
def test_csv_holds_every_value_of_the_result_and_the_epochs(logged_run):
    folder, path, _, losses = logged_run
    assert len(losses) == 3 and json.loads(path.read_text())["penalties"]["ewc"][1] > 0  # a penalty worth checking
    csv_path = folder / "logs" / "csv" / "ewc0.csv"
    assert csv_path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert_logged(csv_values(csv_path), expected(path, losses))
    records = read_csv(csv_path)
    assert {r.experience for r in records if r.key == "train/loss"} == {0, 1, 2}
    assert [(r.experience, r.epoch) for r in records if r.key == "train/loss"] == [(e, k) for e, k, _, _ in losses]
    assert {r.epoch for r in records if r.key.startswith("metrics/")} == {None}
    config = json.loads((folder / "logs" / "csv" / "ewc0.config.json").read_text())
    assert config == json.loads(path.read_text())["config"]


def test_tensorboard_holds_every_value_of_the_result_and_the_epochs(logged_run):
    folder, path, _, losses = logged_run
    values, text, hparams = tensorboard_values(folder / "logs" / "tensorboard" / "ewc0")
    assert_logged(values, expected(path, losses))
    config = json.loads(path.read_text())["config"]
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```")) == config
    assert set(hparams) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["params.lam"].number_value == config["params"]["lam"]
    assert start.hparams["milestones"].string_value == "[]"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {f"metrics/{k}" for k in json.loads(path.read_text())["metrics"]}


def test_finish_alone_logs_what_the_result_holds(logged_run, tmp_path):
    """A run without callbacks (or whose events another process saw): every row once, no losses."""
    _, path, _, _ = logged_run
    with CSVLogger(tmp_path, run_name="later") as logger:
        logger.finish(load_result(path))
        with pytest.raises(ContinualError, match="already called"):
            logger.finish(load_result(path))
    assert_logged(csv_values(tmp_path / "csv" / "later.csv"), expected(path, None))


def test_a_joint_run_logs_each_row_once(tmp_path):
    """Joint training emits one row; the result repeats it T times and every repetition is logged once."""
    loggers = make_loggers("csv", tmp_path, run_name="joint")
    seen = []
    result = run(RunConfig(benchmark="split-digits", strategy="joint", epochs=1, num_experiences=2, device="cpu"),
                 callbacks=[*loggers, lambda e, i: seen.append((e, dict(i)))])
    path = save_result(result, tmp_path / "joint.json")
    loggers[0].finish(result)
    loggers[0].close()
    losses = [(i["experience"], i["epoch"], i["loss"], i["steps"]) for e, i in seen if e == "epoch_end"]
    assert [e for e, _ in seen if e == "experience_end"] == ["experience_end"]
    assert_logged(csv_values(tmp_path / "csv" / "joint.csv"), expected(path, losses))


def test_a_resumed_run_appends_to_its_log_on_the_same_axis(tmp_path):
    """A run killed after experience 1's row (before its checkpoint) and resumed: the second process
    appends; what the first logged after its last checkpoint (experience 1) comes again, at the same
    steps, and the file's last value of every (key, step) is the finished run's."""
    class Killed(Exception):
        pass

    def kill(event, info):
        if event == "experience_end" and info["index"] == 1:
            raise Killed

    events, ckpt = [], tmp_path / "checkpoints"
    record = lambda e, i: events.append((e, dict(i)))  # noqa: E731
    first = make_loggers("csv", tmp_path, run_name="r", epochs=1)
    with pytest.raises(Killed):
        run(RunConfig(**CONFIG), callbacks=[*first, record, kill], checkpoint_dir=ckpt)
    close_all(first)
    second = make_loggers("csv", tmp_path, run_name="r", epochs=1)
    result = run(RunConfig(**CONFIG), callbacks=[*second, record], checkpoint_dir=ckpt)
    assert result.extra.get("resumed") is True
    path = save_result(result, tmp_path / "r.json")
    second[0].finish(result)
    close_all(second)
    want = expected(path, None)
    for _, info in (x for x in events if x[0] == "epoch_end"):
        want[("train/loss", info["experience"])] = info["loss"]  # one epoch per experience: the step is the experience
        want[("train/steps", info["experience"])] = float(info["steps"])
    logged = csv_values(tmp_path / "csv" / "r.csv")
    counts = Counter((key, step) for key, step, _ in logged)
    assert sorted(k for k, n in counts.items() if n > 1) == sorted(
        [("train/loss", 1), ("train/steps", 1)] + [(f"accuracy/experience_{j}", i) for i in (0, 1) for j in range(3)])
    last = {(key, step): value for key, step, value in logged}
    assert set(last) == set(want) and [k for k in want if not same(last[k], want[k])] == []


def test_wandb_offline_writes_its_run_with_the_values(logged_run, tmp_path, monkeypatch):
    """Offline, no network: the recorded events replayed into a W&B logger, then the result."""
    pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "config"),
                       "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "data"),
                       "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    _, path, events, losses = logged_run
    logger = make_loggers("wandb", tmp_path / "logs", run_name="ewc0")[0]
    assert isinstance(logger, WandbLogger)
    for event, info in events:
        logger(event, info)
    logger.finish(load_result(path))
    logger.close()
    runs = list((tmp_path / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = wandb_records_when_written(next(runs[0].glob("run-*.wandb")))
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731 (W&B stores a key in one or the other)
    history = [{key(item): json.loads(item.value_json) for item in r.history.item} for r in records if r.HasField("history")]
    logged = [(k, row["train/epoch_index"] if k.startswith("train/") else row["experience"], v)
              for row in history for k, v in row.items() if not k.startswith("_") and k not in ("experience", "train/epoch_index")]
    assert_logged(logged, expected(path, losses))
    config = {key(item): json.loads(item.value_json) for r in records if r.HasField("config") for item in r.config.update}
    assert config == json.loads(path.read_text())["config"]
    assert any(r.HasField("run") and r.run.display_name == "ewc0" for r in records)
    summary = {key(item): json.loads(item.value_json) for r in records if r.HasField("summary") for item in r.summary.update}
    metrics = json.loads(path.read_text())["metrics"]
    assert {k: summary[f"metrics/{k}"] for k in metrics} == metrics


# ------------------------------------------------------------------------------- errors and names
def test_names_and_missing_extras(monkeypatch, tmp_path):
    assert parse_kinds(["tensorboard,csv", " CSV "]) == ["tensorboard", "csv"]
    assert parse_kinds([]) == []
    with pytest.raises(ContinualError, match=r"unknown logger 'mlflow'; expected tensorboard, wandb or csv"):
        parse_kinds("csv,mlflow")
    with pytest.raises(ContinualError, match="unknown logger ''"):
        parse_kinds("csv,")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    for kind in ("tensorboard", "wandb"):
        with pytest.raises(ContinualError) as info:
            make_loggers(f"csv,{kind}", tmp_path, run_name="r")
        assert str(info.value) == f"--log {kind} needs the {kind!r} package: pip install 'continual[{kind}]'"
    with pytest.raises(ContinualError, match=r"continual\[tensorboard\]"):
        TensorBoardLogger(tmp_path, run_name="r")
    assert check_loggers("csv") == ["csv"]
    with pytest.raises(ContinualError, match="run_name"):
        CSVLogger(tmp_path, run_name="a/b")


def test_loggers_are_callbacks_with_finish_and_close(tmp_path):
    with CSVLogger(tmp_path, run_name="r") as logger:
        assert isinstance(logger, Logger)
        logger("experience_start", {"index": 0, "num_experiences": 1})
        logger("some_later_event", {"whatever": 1})  # an event a later trainer adds is passed over
    assert (tmp_path / "csv" / "r.csv").read_text().splitlines() == [",".join(CSV_COLUMNS)]
    seen = []
    cb = seed_callback([[lambda e, i: seen.append((0, i))], [lambda e, i: seen.append((1, i))]])
    cb("experience_end", {"index": 0, "num_experiences": 1, "rows": [[0.25], [0.75]]})
    assert seen == [(0, {"index": 0, "num_experiences": 1, "row": [0.25]}), (1, {"index": 0, "num_experiences": 1, "row": [0.75]})]


def test_epoch_step_is_global_when_the_epochs_are_known(tmp_path):
    """Given the run's epochs, a resumed run's epochs (here from experience 1) keep their place on the axis."""
    resumed = [("experience_start", {"index": 1, "num_experiences": 2})] + [
        ("epoch_end", {"experience": 1, "epoch": k, "loss": 0.5 + k, "steps": 3}) for k in range(2)]
    for epochs, steps in ((2, [2, 3]), (None, [0, 1])):
        with CSVLogger(tmp_path, run_name=f"epochs{epochs}", epochs=epochs) as logger:
            for event, info in resumed:
                logger(event, info)
        records = read_csv(tmp_path / "csv" / f"epochs{epochs}.csv")
        assert [(r.step, r.experience, r.epoch, r.value) for r in records if r.key == "train/loss"] == [
            (s, 1, k, 0.5 + k) for k, s in enumerate(steps)]
    with pytest.raises(ContinualError, match="epochs=0 must be a positive integer"):
        CSVLogger(tmp_path, run_name="r", epochs=0)


def test_cli_missing_extra_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    out = tmp_path / "runs"
    assert main(["run", "--epochs", "1", "--device", "cpu", "--out", str(out), "--quiet", "--log", "csv", "--log", "wandb"]) == 2
    err = capsys.readouterr().err
    assert err == "continual: error: --log wandb needs the 'wandb' package: pip install 'continual[wandb]'\n"
    assert not out.exists()  # nothing ran, nothing written
    assert main(["run", "--out", str(out), "--log", "tensorboard,excel"]) == 2
    assert "unknown logger 'excel'" in capsys.readouterr().err
    assert main(["run", "--out", str(out), "--log-dir", str(tmp_path / "logs")]) == 2
    assert "without --log" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------- the CLI end to end
def test_cli_logs_csv_and_tensorboard(logged_run, tmp_path):
    """The same configuration from the command line: its logs match its result file and the losses
    of the same run made in Python (deterministic on the CPU)."""
    _, _, _, losses = logged_run
    out = tmp_path / "runs"
    assert main(["run", "--strategy", "ewc", "--epochs", "1", "--num-experiences", "3", "--device", "cpu", "--out", str(out),
                 "--quiet", "--log", "csv,tensorboard"]) == 0
    (path,) = out.glob("*.json")
    assert_logged(csv_values(out / "logs" / "csv" / f"{path.stem}.csv"), expected(path, losses))
    values, _, _ = tensorboard_values(out / "logs" / "tensorboard" / path.stem)
    assert_logged(values, expected(path, losses))


def test_cli_batched_seeds_each_log_their_own_run(tmp_path):
    """Seeds trained together: each seed's log holds its own losses and rows, as its result file."""
    out, logs = tmp_path / "runs", tmp_path / "elsewhere"
    assert main(["run", "--seeds", "2", "--batched", "on", "--epochs", "1", "--num-experiences", "2", "--device", "cpu",
                 "--out", str(out), "--quiet", "--log", "csv", "--log-dir", str(logs)]) == 0
    paths = sorted(out.glob("*.json"))
    assert len(paths) == 2 and "batched" in json.loads(paths[0].read_text())["extra"]
    seed_losses = []
    for path in paths:
        records = read_csv(logs / "csv" / f"{path.stem}.csv")
        assert {r.key for r in records} >= {"train/loss", "accuracy/experience_1", "metrics/final_average_accuracy"}
        losses = [(r.experience, r.epoch, r.value, 0) for r in records if r.key == "train/loss"]
        steps = [r.value for r in records if r.key == "train/steps"]
        assert len(losses) == 2
        want = expected(path, [(e, k, v, s) for (e, k, v, _), s in zip(losses, steps)])
        assert_logged([(r.key, r.step, r.value) for r in records], want)
        seed_losses.append([v for _, _, v, _ in losses])
    assert seed_losses[0] != seed_losses[1]  # each seed got its own loss, not the first seed's
