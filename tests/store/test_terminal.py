"""Live progress reaches the build's terminal from a chapter's kernel, and nothing else."""
from lsda_core.store import cache as C
from lsda_core.store import runtime, terminal


def test_bars_and_stage_lines_go_to_the_named_terminal(tmp_path, monkeypatch):
    tty = tmp_path / "tty"  # stands in for the terminal `lsda book` names
    tty.touch()
    monkeypatch.setenv(terminal.PROGRESS_TTY, str(tty))
    assert list(runtime.progress(range(3), "pretrain epochs")) == [0, 1, 2]
    C.Cache(tmp_path / "art").entry("pool5", {"x": 1}, lambda out: (out / "f").write_text("1"))
    text = tty.read_text()
    assert "pretrain epochs" in text and "pool5: building" in text


def test_quiet_without_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(terminal.PROGRESS_TTY, raising=False)
    assert terminal.stream() is None  # pytest's stderr is not a terminal
    assert list(runtime.progress(range(2), "x")) == [0, 1]
    terminal.status("nothing")
    assert capsys.readouterr().err == ""
    assert list(runtime.progress(range(2), "x", enabled=False)) == [0, 1]
