import json
import math
from unittest import mock

import pytest

from continual import ContinualError, RunConfig, find_results, load_result, run, save_result
from continual import metrics as M
from continual.results import Result, classifier_views, format_csv, format_markdown, format_table, summarize


def fake(strategy, seed, final, wall=1.0):
    R = [[0.9, 0.0], [0.5, final]]
    from continual.metrics import summary

    return Result(config={"benchmark": "b", "scenario": "class", "strategy": strategy}, seed=seed, acc_matrix=R,
                  random_init=[0.1, 0.1], metrics=summary(R, [0.1, 0.1]),
                  timings={"total_train": wall, "total_eval": 0.0, "wall": wall})


def test_round_trip(tmp_path):
    r = run(RunConfig(epochs=1, device="cpu"))
    path = save_result(r, tmp_path / "r.json")
    back = load_result(path)
    assert back.acc_matrix == r.acc_matrix and back.config == r.config and back.metrics == r.metrics
    raw = json.loads(path.read_text())
    assert raw["schema"] == "continual.result" and raw["version"] == 1
    assert {"train", "eval", "plugins", "wall"} <= set(raw["timings"]) and raw["environment"]["torch"]
    # split-digits: 1797 images, a fifth of each class held out for testing, two classes per experience
    assert back.test_sizes == raw["test_sizes"] and len(back.test_sizes) == 5 and all(n > 0 for n in back.test_sizes)
    assert back.metrics["average_incremental_accuracy"] == pytest.approx(
        M.average_incremental_accuracy(back.acc_matrix, back.test_sizes))
    assert back.metrics["last_accuracy"] == pytest.approx(M.last_accuracy(back.acc_matrix, back.test_sizes))
    assert back.classifiers == {}  # this trainer exposes no extra classifiers
    memory = raw["extra"]["memory"]
    assert memory["model_parameters"] > 0 and memory["exemplars"] == 0 and set(memory["plugins"]) == {"head"}
    assert memory["total"] == memory["model_parameters"] + memory["model_buffers"] + sum(memory["plugins"].values())
    prov = back.provenance
    assert prov["class_order"] == {"name": "standard", "seed": None, "order": list(range(10))}
    assert prov["epochs"] == 1 and prov["seed"] == 0 and prov["classifier"] == "linear" and prov["memory"] == {}
    assert prov["versions"]["torch"] == raw["environment"]["torch"] and prov["augmentation"] == "none"


def test_failed_write_keeps_the_old_file(tmp_path):
    path = save_result(fake("a", 0, 0.8), tmp_path / "r.json")
    before = path.read_text()
    with mock.patch("os.replace", side_effect=OSError("disk full")), pytest.raises(ContinualError, match="r.json: disk full"):
        save_result(fake("a", 0, 0.1), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_unserialisable_result_writes_nothing(tmp_path):
    bad = fake("a", 0, 0.8)
    bad.extra["x"] = object()
    with pytest.raises(TypeError):
        save_result(bad, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"schema": "other"}', "not a continual results file"),
    ('{"schema": "continual.result", "version": 99}', "version 99"),
    ('{"schema": "continual.result", "version": 1}', "missing key 'config'"),
])
def test_malformed_files_are_named(tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(ContinualError, match=message) as info:
        load_result(p)
    assert str(p) in str(info.value)


def test_bad_matrix_is_rejected(tmp_path):
    obj = fake("a", 0, 0.8).to_dict()
    obj["acc_matrix"] = [[0.5, 2.0], [0.1, 0.2]]
    (tmp_path / "r.json").write_text(json.dumps(obj))
    with pytest.raises(ContinualError, match=r"\[0, 1\]"):
        load_result(tmp_path / "r.json")


def test_find_results_skips_bad_files(tmp_path):
    save_result(fake("a", 0, 0.8), tmp_path / "sub" / "a0.json")
    (tmp_path / "junk.json").write_text("{")
    results, problems = find_results([tmp_path, tmp_path / "missing"])
    assert len(results) == 1
    assert any("junk.json" in p for p in problems) and any("missing" in p for p in problems)


def test_summary_table():
    rows = summarize([fake("a", s, f) for s, f in enumerate([0.6, 0.7, 0.8])] + [fake("b", 0, 0.2)])
    assert [r["strategy"] for r in rows] == ["a", "b"]
    m, h = rows[0]["final_average_accuracy"]
    assert m == pytest.approx((0.5 + 0.7) / 2) and h == pytest.approx(4.303 * 0.05 / 3**0.5 * 1, rel=1e-3)
    text = format_table(rows)
    assert "a" in text and "60.0 ± " in text and "35.0" in text and "95% CI" in text


def _flip_one_bit(data: bytes) -> bytes:
    at = data.find(b'"acc_matrix"') + 1
    return data[:at] + bytes([data[at] ^ 0x80]) + data[at + 1:]


@pytest.mark.parametrize("damage, message", [
    (lambda data: b"\xff\xfe\x00garbage\x81" * 50, "not UTF-8 text (byte 0xff at offset 0)"),
    (_flip_one_bit, "not UTF-8 text (byte 0xe1 at offset"),
    (lambda data: b"[" * 200_000 + b"]" * 200_000, "JSON nested too deeply to read"),
    (lambda data: b'{"schema": ' * 200_000 + b"1" + b"}" * 200_000, "JSON nested too deeply to read"),
], ids=["garbage", "one-flipped-bit", "deep-list", "deep-object"])
def test_files_with_bad_bytes_are_skipped_with_one_line(tmp_path, capsys, damage, message):
    from continual.cli import main

    good = save_result(fake("ewc", 0, 0.7), tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(ContinualError) as info:
        load_result(bad)
    assert str(info.value).startswith(f"{bad}: {message}")
    results, problems = find_results([tmp_path])
    assert len(results) == 1 and len(problems) == 1 and problems[0].startswith(f"{bad}: {message}")
    for command in ("compare", "plot"):
        assert main([command, str(tmp_path)]) == 0
        err = capsys.readouterr().err
        assert err.startswith(f"continual: skipped {bad}: {message}") and err.count("\n") == 1, err


# ------------------------------------------- fields added within version 1: test sizes, classifiers, provenance
R3 = [[0.9, 0.0, 0.0], [0.6, 0.8, 0.0], [0.3, 0.5, 0.7]]
N3 = [500, 100, 100]


def sized(strategy, seed, *, classifier=None, nme=None, sizes=N3):
    """A result with test sizes; ``nme``: an extra classifier's matrix."""
    config = {"benchmark": "b", "scenario": "class", "strategy": strategy}
    if classifier is not None:
        config["classifier"] = classifier
    classifiers = {}
    if nme is not None:
        classifiers["nme"] = {"acc_matrix": nme, "random_init": [float("nan")] * 3, "metrics": M.summary(nme, test_sizes=sizes)}
    return Result(config=config, seed=seed, acc_matrix=R3, random_init=[0.1] * 3,
                  metrics=M.summary(R3, [0.1] * 3, test_sizes=sizes), timings={"total_train": 1.0, "total_eval": 0.0},
                  test_sizes=list(sizes), classifiers=classifiers, provenance={"augmentation": "none"})


NME = [[0.95, 0.0, 0.0], [0.7, 0.85, 0.0], [0.5, 0.6, 0.75]]


def test_new_fields_round_trip(tmp_path):
    r = sized("icarl", 0, classifier="both", nme=NME)
    back = load_result(save_result(r, tmp_path / "r.json"))
    assert back.test_sizes == N3 and back.provenance == {"augmentation": "none"}
    assert back.classifiers["nme"]["acc_matrix"] == NME and back.classifiers["nme"]["metrics"] == r.classifiers["nme"]["metrics"]
    assert back.matrix().test_sizes == N3 and back.matrix().last_accuracy() == pytest.approx((150 + 50 + 70) / 700)
    assert back.classifier == "linear" and sized("icarl", 0, classifier="nme").classifier == "nme"


def test_files_written_before_the_new_fields_still_load(tmp_path):
    obj = fake("a", 0, 0.8).to_dict()
    for key in ("test_sizes", "classifiers", "provenance"):
        del obj[key]
    (tmp_path / "old.json").write_text(json.dumps(obj))
    old = load_result(tmp_path / "old.json")
    assert old.test_sizes == [] and old.classifiers == {} and old.provenance == {}
    assert old.matrix().test_sizes is None
    rows = summarize([old])
    assert not rows[0]["sized"] and "avg inc acc" not in format_table(rows)


@pytest.mark.parametrize("change, message", [
    (lambda o: o.update(test_sizes=[1, 2]), "'test_sizes' must be a list of 3 counts"),
    (lambda o: o.update(test_sizes=[1, -2, 3]), "'test_sizes' must be a list of 3 counts"),
    (lambda o: o.update(test_sizes=[1, True, 3]), "'test_sizes' must be a list of 3 counts"),
    (lambda o: o.update(test_sizes="500"), "'test_sizes' must be a list"),
    (lambda o: o.update(classifiers=[]), "'classifiers' must be an object"),
    (lambda o: o["classifiers"].update(nme=3), "'classifiers' must map names to objects; 'nme'"),
    (lambda o: o["classifiers"]["nme"].pop("metrics"), "'classifiers.nme.metrics' must be a dict"),
    (lambda o: o["classifiers"]["nme"].update(acc_matrix=[[0.5]]), "'classifiers.nme.acc_matrix' must be a 3 x 3"),
    (lambda o: o["classifiers"]["nme"].update(random_init=[0.1]), "'classifiers.nme.random_init' has 1 entries"),
    (lambda o: o["classifiers"]["nme"]["acc_matrix"][0].__setitem__(0, 1.5), r"accuracies must lie in \[0, 1\] \(in 'classifiers.nme'\)"),
    (lambda o: o["classifiers"]["nme"]["acc_matrix"][0].__setitem__(0, "x"), "must hold numbers"),
    (lambda o: o.update(provenance=[]), "'provenance' must be an object"),
])
def test_bad_new_fields_are_one_line_errors(tmp_path, change, message):
    obj = json.loads(json.dumps(sized("icarl", 0, classifier="both", nme=NME).to_dict(), allow_nan=True))
    change(obj)
    (tmp_path / "bad.json").write_text(json.dumps(obj))
    with pytest.raises(ContinualError, match=message) as info:
        load_result(tmp_path / "bad.json")
    assert "\n" not in str(info.value) and str(info.value).startswith(str(tmp_path / "bad.json"))


def test_classifier_views_label_rows():
    plain = fake("finetune", 0, 0.8)
    assert classifier_views([plain]) == [plain]  # ordinary runs keep their labels
    both = sized("replay", 0, classifier="both", nme=NME)
    views = classifier_views([both])
    assert [v.label for v in views] == ["replay (linear)", "replay (nme)"]
    assert views[1].acc_matrix == NME and views[1].test_sizes == N3 and views[1].classifiers == {}
    assert views[0].acc_matrix == R3 and both.label == "replay"  # the result itself is not changed
    assert [v.label for v in classifier_views([sized("icarl", 0, classifier="nme")])] == ["icarl (nme)"]
    assert [v.label for v in classifier_views([sized("x", 0, classifier="linear")])] == ["x"]


def test_table_with_class_il_columns_and_classifier_rows():
    results = [sized("replay", s, classifier="both", nme=NME) for s in range(2)] + [fake("finetune", 0, 0.8)]
    rows = summarize(results)
    assert [r["strategy"] for r in rows] == ["finetune", "replay (linear)", "replay (nme)"]
    linear, nme = rows[1], rows[2]
    assert linear["average_incremental_accuracy"][0] == pytest.approx(M.average_incremental_accuracy(R3, N3))
    assert linear["last_accuracy"][0] == pytest.approx(270 / 700)
    assert nme["last_accuracy"][0] == pytest.approx((250 + 60 + 75) / 700)
    assert nme["final_average_accuracy"][0] == pytest.approx((0.5 + 0.6 + 0.75) / 3)
    assert math.isnan(rows[0]["average_incremental_accuracy"][0]) and not rows[0]["sized"]
    text = format_table(rows)
    header = text.splitlines()[0]
    assert "avg inc acc (%)" in header and "last acc (%)" in header and "sample-weighted" in text
    finetune = next(line for line in text.splitlines() if line.startswith("b") and "finetune" in line)
    assert finetune.split()[4:6] == ["-", "-"]  # no test sizes: a dash
    assert f"{100 * 270 / 700:.1f}" in text
    md = format_markdown(rows)
    assert "| avg inc acc (%) | last acc (%) |" in md and "| finetune | 1 | - | - |" in md
    assert "| replay (nme) | 2 | " in md
    csv_head = format_csv(rows).splitlines()[0].split(",")
    assert csv_head[4:8] == ["average_incremental_accuracy_mean", "average_incremental_accuracy_ci95",
                             "last_accuracy_mean", "last_accuracy_ci95"]
    # a table of results without test sizes keeps its columns
    plain = summarize([fake("a", 0, 0.8)])
    assert "avg inc acc" not in format_table(plain) and "avg inc acc" not in format_markdown(plain)
    assert "average_incremental_accuracy" not in format_csv(plain)


def test_run_records_extra_classifiers(tmp_path):
    """classifier='both': the linear head's matrix is the run's, NME's is recorded beside it (with
    the same random-init row: no class mean exists before training) and shown as its own row."""
    r = run(RunConfig(epochs=1, device="cpu", classifier="both"))
    back = load_result(save_result(r, tmp_path / "r.json"))
    assert list(back.classifiers) == ["nme"]
    nme = back.classifiers["nme"]
    assert len(nme["acc_matrix"]) == 5 and nme["acc_matrix"] != r.acc_matrix and nme["random_init"] == r.random_init
    assert nme["metrics"]["last_accuracy"] == pytest.approx(nme["by_step"]["seen"][-1], abs=1e-9)
    assert [row["strategy"] for row in summarize([back])] == ["finetune (linear)", "finetune (nme)"]
    only = run(RunConfig(epochs=1, device="cpu", classifier="nme"))
    assert only.acc_matrix == nme["acc_matrix"] and list(only.classifiers) == ["linear"]
    assert only.classifiers["linear"]["acc_matrix"] == r.acc_matrix


def test_classifier_record():
    from continual.results import classifier_record

    rec = classifier_record(M.AccuracyMatrix.from_rows(NME, [0.1] * 3), N3)
    assert rec["acc_matrix"] == NME and rec["random_init"] == [0.1] * 3
    assert rec["metrics"] == M.summary(NME, [0.1] * 3, test_sizes=N3)
    bare = classifier_record(NME)  # an array: no random-init row, no test sizes
    assert all(math.isnan(v) for v in bare["random_init"]) and bare["metrics"] == M.summary(NME)
    json.dumps(rec)
