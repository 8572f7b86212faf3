"""`avpea submit shards build <dataset>` reads the release before submitting: a missing or wrong source
folder is one line and exit 2, and no job (no submitit folder) is made, for every dataset."""

from __future__ import annotations

import pytest

from avpea_dist.cli import main


@pytest.mark.parametrize("dataset,options,named", [
    ("ave", ["--root", "{missing}"], "--root"),
    ("musicavqa", ["--json-dir", "{empty}", "--videos", "{missing}"], "--videos"),
    ("valor", ["--ann-dir", "{missing}", "--videos", "{empty}"], "--ann-dir"),
])
def test_a_missing_source_folder_is_refused_before_submitting(dataset, options, named, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    paths = {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty")}
    out = tmp_path / "shards"
    argv = ["submit", "shards", "build", dataset, *[o.format(**paths) for o in options], "--out", str(out),
            "--cluster", "local", "--tasks-per-node", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{named} {tmp_path / 'missing'} does not exist (checked before submitting)" in err
    assert not (out / "submitit").exists()
    assert main([*argv, "--dry-run"]) == 2  # a dry run shows a job that would start: it checks as well


def test_a_source_folder_without_the_release_is_refused_before_submitting(tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["submit", "shards", "build", "ave", "--root", str(tmp_path), "--out", str(out),
                 "--cluster", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Annotations.txt" in err and not (out / "submitit").exists()
