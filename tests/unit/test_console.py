"""Issue 16: progress bars in a non-interactive log wrote thousands of carriage-return redraws; when
stderr is not a terminal they write a plain line every few seconds instead."""

import io

from tunesmith import console
from tunesmith.train.metrics import Progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_plain_lines_not_carriage_returns():
    log = io.StringIO()  # not a terminal
    bar = console.progress_bar(range(5000), file=log, desc="prepare", interval_s=3600)
    for _ in bar:
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # the start, then (interval an hour) nothing until the final state at close
    assert lines[0].startswith("prepare: 0/5000") and lines[-1].startswith("prepare: 5000/5000")
    assert len(lines) == 2


def test_log_interval_limits_the_lines():
    log = io.StringIO()
    bar = console.progress_bar(total=3000, file=log, desc="x", interval_s=0)
    for _ in range(3000):
        bar.update()
    bar.close()
    assert "\r" not in log.getvalue() and log.getvalue().splitlines()[-1].startswith("x: 3000/3000")


def test_terminal_keeps_the_redrawn_bar():
    tty = FakeTTY()
    bar = console.progress_bar(total=10, file=tty, desc="t", mininterval=0)
    for _ in range(10):
        bar.update()
    bar.close()
    assert "\r" in tty.getvalue()


def test_train_progress_in_a_log(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    monkeypatch.setattr(console, "LOG_EVERY_S", 3600.0)
    p = Progress(total=2000)
    for _ in range(2000):
        p.update(loss=1.5)
    p.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 2 and "2000/2000" in lines[-1] and "loss=1.5" in lines[-1]


def test_say_is_still_importable_from_train_run():
    from tunesmith.train.run import say

    assert say is console.say
