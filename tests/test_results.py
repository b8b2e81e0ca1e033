import json
from unittest import mock

import pytest

from continual import ContinualError, RunConfig, find_results, load_result, run, save_result
from continual.results import Result, format_table, summarize


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
