"""Safe files: the umask's mode, one-line write errors, content checksums, folder locks, temporaries.

The tests run as root on CI, where permission bits do not stop a write: read-only, forbidden and
full file systems are simulated by making ``os.replace`` / ``os.fsync`` / ``tempfile.mkstemp``
raise the ``OSError`` the kernel would, and a path under a regular file fails for root too.
"""

import errno
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
import torch

from continual import ContinualError
from continual.cli import main
from continual.files import (
    FolderLock,
    atomic_torch_save,
    atomic_write_text,
    check_writable,
    checksum_problem,
    content_digest,
    remove_temporaries,
    with_checksum,
)
from continual.results import save_result
from tests.test_results import fake


@contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def one_line_error(capsys):
    """The error line: the last on stderr, the only one of its kind (sweep and demo first say
    what they are about to do, on a line of their own)."""
    err = capsys.readouterr().err
    lines = err.splitlines(keepends=True)
    assert "Traceback" not in err and sum(line.startswith("continual: error: ") for line in lines) == 1, err
    assert lines[-1].startswith("continual: error: ") and len(lines) <= 2, err
    return lines[-1]


# -------------------------------------------------------------------------------------------- modes
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_of_the_umask(tmp_path, capsys, mask, expected):
    with umask(mask):
        atomic_write_text(tmp_path / "config.json", "{}")
        atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "checkpoint-0000.pt", checksum=True)
        for s in range(2):
            save_result(fake("ewc", s, 0.7), tmp_path / f"ewc{s}.json")
        assert main(["compare", str(tmp_path)]) == 0  # compare.md, compare.csv and a PNG
    capsys.readouterr()
    written = sorted(p for p in tmp_path.iterdir())
    assert {p.name for p in written} >= {"config.json", "checkpoint-0000.pt", "ewc0.json", "compare.md", "compare.csv", "curves_b_class.png"}
    assert {p.name: mode(p) for p in written} == {p.name: expected for p in written}


# ------------------------------------------------------------------------------------- write errors
@pytest.mark.parametrize("code, cause", [
    (errno.EACCES, "permission denied"),
    (errno.EROFS, "read-only file system"),
    (errno.ENOSPC, r"no space left on device \(needed [\d.]+ (bytes|KB), [\d.]+ (bytes|KB|MB|GB|TB) free\)"),
])
@pytest.mark.parametrize("where", ["os.replace", "os.fsync", "tempfile.mkstemp"])
def test_a_failed_write_is_one_error_naming_the_path_and_nothing_is_left(tmp_path, code, cause, where):
    path = save_result(fake("a", 0, 0.8), tmp_path / "r.json")
    before = path.read_bytes()
    with mock.patch(where, side_effect=OSError(code, os.strerror(code))):
        with pytest.raises(ContinualError, match=f"^{tmp_path / 'r.json'}: {cause}$"):
            save_result(fake("a", 0, 0.1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_a_path_under_a_regular_file_is_one_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ContinualError, match=r"file/sub: not a directory$"):
        atomic_write_text(tmp_path / "file" / "sub" / "r.json", "{}")
    with pytest.raises(ContinualError, match=r"file: exists and is not a folder$"):
        check_writable(tmp_path / "file")
    with pytest.raises(ContinualError, match=r"/file: exists and is not a folder$"):  # x.pt's folder
        atomic_torch_save({}, tmp_path / "file" / "x.pt")


def _under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return str(tmp_path / "file" / "out")


@pytest.mark.parametrize("command", [
    lambda out, tmp: ["run", "--epochs", "1", "--device", "cpu", "--quiet", "--out", out],
    lambda out, tmp: ["demo", "--seeds", "1", "--quiet", "--out", out],
    lambda out, tmp: ["pretrain", "--epochs", "1", "--device", "cpu", "--out", out + "/p.pt"],
    lambda out, tmp: ["compare", str(tmp / "results"), "--out", out],
    lambda out, tmp: ["plot", str(tmp / "results"), "--out", out],
    lambda out, tmp: ["sweep", str(tmp / "sweep.toml"), "--set", f"out={out}", "--quiet"],
], ids=["run", "demo", "pretrain", "compare", "plot", "sweep"])
def test_every_command_stops_before_training_on_an_output_folder_it_cannot_write(tmp_path, capsys, command):
    save_result(fake("ewc", 0, 0.7), tmp_path / "results" / "ewc0.json")
    (tmp_path / "sweep.toml").write_text('[base]\nepochs = 1\ndevice = "cpu"\n[strategies]\nfinetune = {}\n')
    out = _under_a_file(tmp_path)
    with mock.patch("continual.trainer.Trainer.fit", side_effect=AssertionError("trained")):
        assert main(command(out, tmp_path)) == 2
    assert "/file' is a file, not a folder" in one_line_error(capsys)  # cli.check_out_dir, before the write probe


@pytest.mark.parametrize("code, cause", [(errno.EROFS, "read-only file system"), (errno.ENOSPC, "no space left on device (needed")])
def test_a_write_failing_during_a_run_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys, code, cause):
    """The probe passes, then the first checkpoint cannot be written (the disk filled up)."""
    with mock.patch("os.replace", side_effect=OSError(code, os.strerror(code))):
        assert main(["run", "--epochs", "1", "--num-experiences", "2", "--device", "cpu", "--quiet", "--out", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert "checkpoint-0000.pt: " + cause in err
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("command", [["compare"], ["plot"]])
def test_compare_and_plot_on_a_full_disk_are_one_line(tmp_path, capsys, command):
    save_result(fake("ewc", 0, 0.7), tmp_path / "ewc0.json")
    with mock.patch("os.fsync", side_effect=OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))):
        assert main([*command, str(tmp_path)]) == 2
    assert "no space left on device (needed" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ewc0.json"]


def test_any_other_os_error_in_the_cli_is_one_line(capsys, monkeypatch):
    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/file")

    monkeypatch.setattr("continual.cli.cmd_list", denied)
    assert main(["list"]) == 2
    assert one_line_error(capsys) == "continual: error: /somewhere/file: Permission denied\n"


# ---------------------------------------------------------------------------------------- checksums
def test_the_content_digest_sees_every_value_and_shape():
    state = {"w": torch.arange(6.0).reshape(2, 3), "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "lr": 0.1},
             "names": ["a", "b"], "flag": True, "none": None}
    digest = content_digest(state)
    assert content_digest({**state, "w": state["w"].clone()}) == digest  # values, not identity
    changed = [
        {**state, "w": state["w"].reshape(3, 2)},
        {**state, "w": state["w"].to(torch.float64)},
        {**state, "opt": {"state": {0: {"step": torch.tensor(4.0)}}, "lr": 0.1}},
        {**state, "names": ("a", "b")},
        {**state, "flag": 1},
        {k: v for k, v in state.items() if k != "none"},
    ]
    for other in changed:
        assert content_digest(other) != digest
    for i in range(6):  # every single-bit change of every tensor byte
        w = state["w"].clone()
        w.view(-1).view(torch.uint8)[i * 4] ^= 1
        assert content_digest({**state, "w": w}) != digest


def test_a_saved_checksum_verifies_and_catches_a_flipped_byte(tmp_path):
    path = atomic_torch_save({"format": "x", "w": torch.arange(1000.0)}, tmp_path / "c.pt", checksum=True)
    state = torch.load(path, weights_only=True)
    assert state["sha256"] == with_checksum({"format": "x", "w": torch.arange(1000.0)})["sha256"]
    assert checksum_problem(state) is None
    data = bytearray(path.read_bytes())
    data[data.find(torch.arange(1000.0)[500:501].numpy().tobytes())] ^= 0x10  # inside the tensor's bytes
    path.write_bytes(data)
    flipped = torch.load(path, weights_only=True)  # torch reads it without complaint
    assert checksum_problem(flipped) == "checksum mismatch"
    assert checksum_problem({"w": torch.zeros(1)}) == "no checksum"


# -------------------------------------------------------------------------------------------- locks
def test_a_folder_lock_excludes_a_second_holder_until_released(tmp_path):
    folder = tmp_path / "run"
    first = FolderLock(folder, what="run x")
    assert first.acquire() and (folder / ".lock").read_text() == f"{os.getpid()}\n"
    second = FolderLock(folder, what="run x")  # flock excludes another open file, in this process too
    assert not second.acquire() and second.holder == os.getpid()
    with pytest.raises(ContinualError, match=f"^run x is already in progress in {folder} \\(pid {os.getpid()}\\)$"):
        with FolderLock(folder, what="run x"):
            pass
    first.release()
    assert not folder.exists()  # the lock created it, and it is empty again
    assert second.acquire()
    second.release()


def test_a_lock_taken_on_a_removed_lock_file_is_taken_again(tmp_path):
    """A process that opened the lock file before the holder removed it must not hold a lock on
    the removed file while a third process locks the new one."""
    (tmp_path / "keep").write_text("x")  # the folder outlives the lock
    holder = FolderLock(tmp_path)
    assert holder.acquire()
    stale = os.open(tmp_path / ".lock", os.O_RDWR)
    holder.release()  # removes .lock
    waiter = FolderLock(tmp_path)
    real_open = os.open
    with mock.patch("os.open", side_effect=[stale, real_open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT, 0o666)]):
        assert waiter.acquire()
    assert waiter._fd != stale and os.fstat(waiter._fd).st_ino == os.stat(tmp_path / ".lock").st_ino
    assert not FolderLock(tmp_path).acquire()
    waiter.release()


def test_a_file_system_without_locks_runs_unlocked(tmp_path):
    with mock.patch("fcntl.flock", side_effect=OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))):
        with FolderLock(tmp_path / "nfs"):
            pass


def test_temporaries_of_named_files_only_are_removed(tmp_path):
    for name in (".r.json.abc123.tmp", ".checkpoint-0001.pt.x_y.tmp", ".other.json.abc.tmp", "r.json", ".lock"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in remove_temporaries(tmp_path, ("r.json",))] == [".r.json.abc123.tmp"]
    remove_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "r.json"]
    assert remove_temporaries(tmp_path / "missing") == []


def test_check_writable_removes_its_probe(tmp_path):
    check_writable(tmp_path / "a" / "b")
    assert list((tmp_path / "a" / "b").iterdir()) == []
    with mock.patch("tempfile.mkstemp", side_effect=OSError(errno.EACCES, os.strerror(errno.EACCES))):
        with pytest.raises(ContinualError, match=f"^{tmp_path}: permission denied$"):
            check_writable(tmp_path)


@pytest.mark.parametrize("command", [
    lambda out, tmp: ["run", "--epochs", "1", "--device", "cpu", "--quiet", "--out", out],
    lambda out, tmp: ["demo", "--seeds", "1", "--quiet", "--out", out],
    lambda out, tmp: ["sweep", str(tmp / "sweep.toml"), "--set", f"out={out}", "--quiet"],
], ids=["run", "demo", "sweep"])
def test_an_output_folder_without_write_permission_stops_before_training(tmp_path, capsys, command):
    """Root ignores permission bits, so the probe's write is refused by a mock, as EACCES would."""
    (tmp_path / "sweep.toml").write_text('[base]\nepochs = 1\ndevice = "cpu"\n[strategies]\nfinetune = {}\n')
    out = tmp_path / "locked"
    out.mkdir()
    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out))
        return real(*args, dir=dir, **kwargs)

    with mock.patch("tempfile.mkstemp", side_effect=refuse), \
         mock.patch("continual.trainer.Trainer.fit", side_effect=AssertionError("trained")):
        assert main(command(str(out), tmp_path)) == 2
    assert one_line_error(capsys).endswith("locked: permission denied\n")
