"""Progress of long phases (runtime/progress.py): a bar on a terminal for rank 0, periodic lines elsewhere;
evaluation, search indexing, captioning and predict use it."""

from __future__ import annotations

import logging
import re

from avpea_dist.runtime import progress


def test_off_a_terminal_a_line_every_period_and_one_at_the_end(capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # logging not set up: lines go to stderr
    with progress.Progress("evaluate test", total=4, unit="batch", every_s=0.0) as p:
        for _ in range(4):
            p.update()
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 5
    assert re.fullmatch(r"evaluate test: 1 of 4 batch \(25%\) after \d+ s \([\d.]+ batch/s\)", lines[0])
    assert lines[-1].startswith("evaluate test: done, 4 of 4 batch (100%)")


def test_a_short_phase_writes_nothing_and_a_stream_counts_without_a_total(capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    assert list(progress.track(range(3), "quick", every_s=60.0)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    list(progress.track(iter(range(2)), "stream", unit="video", every_s=0.0))
    assert capsys.readouterr().err.splitlines()[0].startswith("stream: 1 video after ")


def test_other_ranks_write_lines_even_on_a_terminal(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    caplog.set_level(logging.INFO, logger="avpea_dist.progress")
    p = progress.Progress("evaluate val", total=2, rank=1, every_s=0.0)
    assert p.bar is None
    p.update(2)
    p.close()
    assert [r.getMessage()[:28] for r in caplog.records] == ["[rank 1] evaluate val: 2 of ", "[rank 1] evaluate val: done,"]


def test_rank_zero_on_a_terminal_draws_a_bar_and_writes_no_lines(capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    p = progress.Progress("caption: decoding", total=3, rank=0, every_s=0.0, bar=True)
    p.update(3)
    p.close()
    err = capsys.readouterr().err
    assert "caption: decoding" in err and "0/3" in err and "after" not in err
