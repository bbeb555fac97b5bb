"""Live progress reaches the build's terminal (bars) or its log (plain lines) from a chapter's
kernel; nothing reaches CI's output or a notebook's own."""
import os

from lsda_core.store import cache as C
from lsda_core.store import runtime, terminal


def _no_terminal(monkeypatch, ci: str | None = None) -> None:
    for name in (terminal.PROGRESS_TTY, terminal.PROGRESS_LOG, "CI"):
        monkeypatch.delenv(name, raising=False)
    if ci is not None:
        monkeypatch.setenv("CI", ci)


def test_bars_and_stage_lines_go_to_the_named_terminal(tmp_path, monkeypatch):
    _no_terminal(monkeypatch)
    tty = tmp_path / "tty"  # stands in for the terminal `lsda book` names
    tty.touch()
    monkeypatch.setenv(terminal.PROGRESS_TTY, str(tty))
    assert list(runtime.progress(range(3), "pretrain epochs")) == [0, 1, 2]
    C.Cache(tmp_path / "art").entry("pool5", {"x": 1}, lambda out: (out / "f").write_text("1"))
    text = tty.read_text()
    assert "pretrain epochs" in text and "pool5: building" in text and "pool5: built" in text


def test_plain_lines_go_to_the_named_log(tmp_path, monkeypatch):
    _no_terminal(monkeypatch)
    log = tmp_path / "book.log"
    log.write_text("earlier output\n")
    monkeypatch.setenv(terminal.PROGRESS_LOG, str(log))
    monkeypatch.setattr(terminal, "LOG_EVERY", 0.0)
    assert list(runtime.progress(range(3), "fine-tune")) == [0, 1, 2]
    C.Cache(tmp_path / "art").entry("pool5", {"x": 1}, lambda out: (out / "f").write_text("1"))
    text = log.read_text()
    assert text.startswith("earlier output\n")  # appended, not overwritten
    assert "\r" not in text and "\033" not in text  # no terminal control codes in a log
    assert "fine-tune: 1/3" in text and "fine-tune: 3/3" in text and "fine-tune: 3 done in" in text
    assert "pool5: building" in text and "pool5: built" in text


def test_a_log_line_at_most_every_interval(tmp_path, monkeypatch):
    _no_terminal(monkeypatch)
    log = tmp_path / "book.log"
    monkeypatch.setenv(terminal.PROGRESS_LOG, str(log))
    assert list(terminal.lines(range(1000), "quick", every=3600)) == list(range(1000))
    assert not log.exists() or log.read_text() == ""  # a short loop writes nothing


def test_short_loops_in_a_row_still_show_a_line_every_interval(tmp_path, monkeypatch):
    _no_terminal(monkeypatch)
    log = tmp_path / "book.log"
    monkeypatch.setenv(terminal.PROGRESS_LOG, str(log))
    clock = [1000.0]
    monkeypatch.setattr(terminal.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(terminal, "_last_line", clock[0])
    for epoch in range(1, 11):  # ten epochs of 5 steps, 1 s a step: each far shorter than the interval
        for _ in terminal.lines(range(5), f"pretrain epoch {epoch}/10", every=12):
            clock[0] += 1
    text = log.read_text().splitlines()
    progress = [t for t in text if "done in" not in t]
    # 50 s of steps: a line at 12 s, its loop's closing line at 15 s, the next line 12 s later ...
    assert [t.split("] ")[1] for t in progress] == [f"  pretrain epoch {e}/10: 2/5, 2 s, ~3 s left" for e in (3, 6, 9)]
    assert sum("done in 5 s" in t for t in text) == 3  # each loop that wrote a line closes it


def test_a_command_without_terminal_writes_lines_to_stderr(monkeypatch, capsys):
    _no_terminal(monkeypatch)
    import ipykernel.kernelspec  # noqa: F401  what starting a chapter's kernel imports into `lsda book`
    terminal.status("pretrain: building abc")
    assert "pretrain: building abc" in capsys.readouterr().err


def test_quiet_in_ci_and_in_a_kernel_without_a_named_output(tmp_path, monkeypatch, capsys):
    _no_terminal(monkeypatch, ci="true")
    monkeypatch.setenv(terminal.PROGRESS_LOG, str(tmp_path / "book.log"))
    assert terminal.stream() is None  # pytest's stderr is not a terminal
    assert list(runtime.progress(range(2), "x")) == [0, 1]
    terminal.status("nothing")
    assert not (tmp_path / "book.log").exists()
    _no_terminal(monkeypatch)
    from ipykernel.kernelapp import IPKernelApp
    monkeypatch.setattr(IPKernelApp, "initialized", classmethod(lambda cls: True))  # a kernel's stderr is the page
    terminal.status("nothing")
    assert capsys.readouterr().err == ""
    assert list(runtime.progress(range(2), "x", enabled=False)) == [0, 1]


def test_children_get_this_process_stderr_and_the_environment_is_restored(monkeypatch):
    _no_terminal(monkeypatch)
    import ipykernel.kernelspec  # noqa: F401  imported by starting the first chapter's kernel
    with terminal.for_children() as shown:
        assert shown and os.environ[terminal.PROGRESS_LOG] == f"/proc/{os.getpid()}/fd/2"
    assert terminal.PROGRESS_LOG not in os.environ
    monkeypatch.setenv("CI", "1")
    with terminal.for_children() as shown:
        assert not shown and terminal.PROGRESS_LOG not in os.environ


def test_a_log_opened_at_an_offset_is_made_append_only(tmp_path):
    """`make book > log 2>&1`: the command writes at its offset, a child appends; neither
    overwrites the other once the command's descriptor appends."""
    path = tmp_path / "book.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, b"start\n")
        terminal._append_only(fd)
        with open(path, "a") as child:
            child.write("child line\n")
        os.write(fd, b"parent line\n")
    finally:
        os.close(fd)
    assert path.read_text() == "start\nchild line\nparent line\n"
