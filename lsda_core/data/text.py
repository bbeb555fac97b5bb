"""Text files in and out: a dataset's lists (split lists, devkit lists) and the files a
command writes (`--out`). Every failure is one error naming the file, instead of an
OSError or UnicodeDecodeError traceback."""
from __future__ import annotations

import os
from pathlib import Path

from lsda_core.core.errors import DataError, LsdaError
from lsda_core.store.files import atomic_write_text


def read_text(path: Path | str, what: str = "") -> str:
    """The text of `path`; any failure -> `DataError("<path>: cannot read [what] (<why>)")`."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        why = f"not UTF-8 text: byte {e.object[e.start]:#04x} at offset {e.start}"
    except OSError as e:
        why = e.strerror or str(e)
    raise DataError(f"{path}: cannot read {what + ' ' if what else ''}({why})")


def list_folder(folder: Path | str) -> list[os.DirEntry]:
    """The entries of `folder`; an unreadable folder -> `DataError("<folder>: cannot list ...")`."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as e:
        raise DataError(f"{folder}: cannot list the folder ({e.strerror or e})") from None


def check_output_file(path: Path | str, what: str = "output file") -> Path:
    """`path` if it can name a file to write: not a folder, and no file where a folder of
    its path must be; else an LsdaError naming it. Commands call this before their work,
    so a bad `--out` fails in a second instead of after the computing."""
    path = Path(path)
    if path.is_dir():
        raise LsdaError(f"{path}: is a folder, but the {what} must be a file (e.g. {path / 'out.json'})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise LsdaError(f"{path}: cannot write the {what}: {parent} is a file, not a folder")
            break
    return path


def write_output(path: Path | str, text: str, what: str = "output file") -> Path:
    """Write `text` to `path` atomically (folders made as needed); any failure -> an
    LsdaError naming the file."""
    path = check_output_file(path, what)
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise LsdaError(f"{path}: cannot write the {what} ({e.strerror or e})") from None
    return path
