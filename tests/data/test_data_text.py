"""Text files in and out (lsda_core.data.text): one error naming the file for each failure."""
from __future__ import annotations

from pathlib import Path

import pytest

import lsda_core.data.text as T
from lsda_core.core.errors import DataError, LsdaError


def test_read_text(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("x y\n")
    assert T.read_text(p) == "x y\n"
    with pytest.raises(DataError, match=rf"^{tmp_path / 'none.txt'}: cannot read split list \(No such file"):
        T.read_text(tmp_path / "none.txt", "split list")
    with pytest.raises(DataError, match=rf"^{tmp_path}: cannot read \(Is a directory\)$"):
        T.read_text(tmp_path)
    p.write_bytes(b"ok\n\xc3\x28")
    with pytest.raises(DataError) as e:
        T.read_text(p)
    assert str(e.value) == f"{p}: cannot read (not UTF-8 text: byte 0xc3 at offset 3)"


def test_output_file_checks(tmp_path):
    assert T.check_output_file(tmp_path / "new" / "a.json") == tmp_path / "new" / "a.json"
    with pytest.raises(LsdaError, match=rf"^{tmp_path}: is a folder, but the scores must be a file"):
        T.check_output_file(tmp_path, "scores")
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(LsdaError, match=rf"^{f / 'a' / 'b.json'}: cannot write the output file: {f} is a file"):
        T.check_output_file(f / "a" / "b.json")


def test_write_output(tmp_path, monkeypatch):
    out = T.write_output(tmp_path / "d" / "x.json", "{}\n", "scores")
    assert out.read_text() == "{}\n"

    def denied(path: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(T, "atomic_write_text", denied)  # tests may run as root, where chmod does not stop writes
    with pytest.raises(LsdaError) as e:
        T.write_output(tmp_path / "y.json", "{}", "scores")
    assert str(e.value) == f"{tmp_path / 'y.json'}: cannot write the scores (Permission denied)"


def test_list_folder(tmp_path, monkeypatch):
    (tmp_path / "a").write_text("")
    assert [e.name for e in T.list_folder(tmp_path)] == ["a"]
    with pytest.raises(DataError, match=rf"^{tmp_path / 'none'}: cannot list the folder \(No such file"):
        T.list_folder(tmp_path / "none")
    real = T.os.scandir

    def scandir(path):  # tests may run as root, where chmod 000 does not stop reading
        if Path(path) == tmp_path:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(T.os, "scandir", scandir)
    with pytest.raises(DataError) as e:
        T.list_folder(tmp_path)
    assert str(e.value) == f"{tmp_path}: cannot list the folder (Permission denied)"
