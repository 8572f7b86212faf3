"""`avpea search --shards` checks the folder before any model is loaded: shards of another task's schema
(AVE's) are named with the schema found and the one needed, never 'unreadable sample'."""

from __future__ import annotations

import pytest

from avpea_dist.cli import main


def test_search_on_ave_shards_names_both_schemas(synth_shards, tmp_path, capsys):
    run = tmp_path / "run"  # never opened: the shards are refused first
    rc = main(["search", "--run", str(run), "--shards", str(synth_shards), "--query", "a dog barks"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "schema 'avel' (read by task avel)" in err and "needs schema 'captions'" in err
    assert "`avpea shards build valor`" in err and "unreadable" not in err


def test_search_shards_folder_and_split_problems_are_one_line_each(synth_shards, tmp_path):
    from avpea_dist.apps.search import check_shards

    with pytest.raises(FileNotFoundError, match="is not a folder; give a folder of 'captions' shards"):
        check_shards(str(tmp_path / "nope"), "test")
    with pytest.raises(FileNotFoundError, match=r"holds no manifest\.json \(not a shard folder\)"):
        check_shards(str(tmp_path), "test")
