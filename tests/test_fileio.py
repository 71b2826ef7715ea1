"""edgeprune.fileio: a file is written whole or not at all, and a full or read-only disk is one DiskError."""

from __future__ import annotations

import errno

import pytest

from edgeprune.errors import DiskError
from edgeprune.fileio import append_line, disk_error, staged, staged_folder, write_bytes, write_text, writing
from tests.conftest import remount_read_only, small_tmpfs


def _temporaries(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "report.json", "old\n")
    with pytest.raises(ValueError), writing(path) as tmp:
        tmp.write_text("half of the new")
        raise ValueError("the writer failed")
    assert path.read_text() == "old\n" and not _temporaries(tmp_path)
    write_text(path, "new\n")
    assert path.read_text() == "new\n" and not _temporaries(tmp_path)


def test_a_full_disk_is_one_error_naming_the_file_and_the_room_and_keeps_the_old_file(tmp_path):
    with small_tmpfs(tmp_path / "disk", 1, free_kib=64) as disk:
        old = write_bytes(disk / "out" / "model.bin", b"x" * 1000)
        with pytest.raises(DiskError) as caught:
            write_bytes(old, b"y" * 200_000)
        assert old.read_bytes() == b"x" * 1000 and not _temporaries(disk)
    message = str(caught.value)
    assert f"no space left on the disk writing {old} (needs about 200.0 kB, " in message, message
    assert "fix: free space there, or point --out at a disk with room" in message


def test_a_writer_that_drops_the_errno_still_reads_as_a_full_disk(tmp_path):
    torch = pytest.importorskip("torch")
    with small_tmpfs(tmp_path / "disk", 1, free_kib=64) as disk:
        with pytest.raises(DiskError, match="no space left on the disk writing .*model.pt"), \
                writing(disk / "model.pt") as tmp:  # fmt: skip
            torch.save({"weights": torch.zeros(100_000)}, tmp)  # torch: "file write failed", no errno
        assert not (disk / "model.pt").exists() and not _temporaries(disk)


def test_a_read_only_disk_names_the_path(tmp_path):
    with small_tmpfs(tmp_path / "disk", 1) as disk:
        write_text(disk / "out" / "kept.json", "{}")
        remount_read_only(disk)
        with pytest.raises(DiskError, match=r"cannot write .*/disk/out/a.json: its filesystem is read-only; fix: "
                                            "point --out at a writable filesystem"):  # fmt: skip
            write_text(disk / "out" / "a.json", "{}", elsewhere="--out")
        with pytest.raises(DiskError, match="read-only"):
            write_text(disk / "new" / "a.json", "{}")  # the folder cannot be made either
        assert (disk / "out" / "kept.json").read_text() == "{}"


def test_staged_files_appear_together_and_only_when_all_are_complete(tmp_path):
    with staged(tmp_path, last="model.xml") as staging:
        (staging / "model.bin").write_bytes(b"weights")
        (staging / "model.xml").write_text("<net/>")
        assert not list(tmp_path.glob("model.*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.xml"]
    with pytest.raises(RuntimeError), staged(tmp_path, last="model.xml") as staging:
        (staging / "model.bin").write_bytes(b"half")
        raise RuntimeError("the exporter failed")
    assert (tmp_path / "model.bin").read_bytes() == b"weights" and not _temporaries(tmp_path)


def test_a_staged_folder_appears_only_when_complete(tmp_path):
    with pytest.raises(KeyError), staged_folder(tmp_path / "finetuned") as staging:
        (staging / "model.safetensors").write_bytes(b"half")
        raise KeyError("interrupted")
    assert not list(tmp_path.iterdir())
    with staged_folder(tmp_path / "finetuned") as staging:
        (staging / "model.safetensors").write_bytes(b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["finetuned"]
    assert (tmp_path / "finetuned" / "model.safetensors").read_bytes() == b"whole"


def test_an_appended_line_starts_on_its_own_line_after_a_torn_one(tmp_path):
    path = tmp_path / "cache.jsonl"
    append_line(path, '{"a": 1}')
    with open(path, "a") as f:
        f.write('{"b": 2, "to')  # a crash or a full disk tore this line
    append_line(path, '{"c": 3}')
    assert path.read_text().splitlines() == ['{"a": 1}', '{"b": 2, "to', '{"c": 3}']


def test_an_append_that_does_not_fit_is_cut_back_off(tmp_path):
    with small_tmpfs(tmp_path / "disk", 1, free_kib=32) as disk:
        path = disk / "cache.jsonl"
        append_line(path, '{"a": 1}')
        with pytest.raises(DiskError, match="no space left on the disk writing .*cache.jsonl .*EDGEPRUNE_CACHE"):
            append_line(path, "x" * 200_000, elsewhere="EDGEPRUNE_CACHE")
        assert path.read_text() == '{"a": 1}\n'


def test_disk_errors_from_third_party_code_are_found_in_the_chain_of_causes():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/model.onnx.data")
    try:
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("export failed") from exc
    except RuntimeError as wrapped:
        error = disk_error(wrapped)
    assert error is not None and "writing /data/out/model.onnx.data" in error.message
    assert disk_error(RuntimeError("LLVM: IO failure on output stream: No space left on device")) is not None
    assert disk_error(OSError(errno.EACCES, "Permission denied", "/etc/shadow")) is None  # a read, maybe: a bug
    assert disk_error(ValueError("bad value")) is None
