"""`ropewatch history` and `ropewatch baseline` on a real store."""

from __future__ import annotations

import pytest
from PIL import Image

from ropewatch_validator.cli.main import build_parser, main
from ropewatch_validator.ops.history import open_store


@pytest.fixture
def filled(tmp_path, make_report, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    db = str(tmp_path / "h.sqlite")
    store = open_store(db)
    for job, (wc, mv) in enumerate([(5, "v1"), (1, "v1"), (9, "v1"), (2, "v2")], start=1):
        store.record_run(
            make_report(
                job=job,
                project=3 if job < 4 else 8,
                model_version=mv,
                updated=f"2026-11-0{job}T00:00:00.000000Z",
                cm=((45 - wc, wc), (3, 52)),
            )
        )
    store.close()
    return db


def test_history_table_and_plot(filled, tmp_path, capsys):
    plot = tmp_path / "trend.png"
    assert (
        main(
            ["history", "--db", filled, "--model-version", "v1", "--baseline-runs", "3", "--plot", str(plot)]
        )
        == 0
    )
    out = capsys.readouterr().out
    # wrong F1 of job 2 by hand: P = 44/47, R = 44/45.
    p, r = 44 / 47, 44 / 45
    assert f"{2 * p * r / (p + r):.3f}" in out
    assert "baseline" in out and "2026-11-04" not in out  # v2's run is filtered out
    assert f"{5 / 106 * 1000:.3f}" in out  # median flips of runs 1-3 (5, 1, 9) = 5 per 106 persons
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.width > 300


def test_history_filters_and_empty(filled, capsys):
    assert main(["history", "--db", filled, "--project", "8"]) == 0
    out = capsys.readouterr().out
    assert "v2" in out and "v1" not in out
    assert main(["history", "--db", filled, "--job", "99"]) == 0
    assert "no stored runs match" in capsys.readouterr().out


def test_baseline_set_show_clear(filled, capsys):
    assert main(["baseline", "show", "v1", "--db", filled, "--first", "2"]) == 0
    out = capsys.readouterr().out
    assert "own baseline of v1 (drift; median of the first 2 runs): runs [1, 2]" in out
    assert "reference version: none (the first version stored)" in out
    assert main(["baseline", "set", "v1", "--runs", "3", "--db", filled, "--note", "relabelled"]) == 0
    assert main(["baseline", "show", "v1", "--db", filled]) == 0
    out = capsys.readouterr().out
    assert "(drift; pinned): runs [3]" in out and f"{9 / 106 * 1000:.3f}" in out
    assert main(["baseline", "set", "v1", "--runs", "4", "--db", filled]) == 2
    assert "not runs of model version 'v1'" in capsys.readouterr().err
    assert main(["baseline", "clear", "v1", "--db", filled]) == 0
    assert "unpinned" in capsys.readouterr().out
    assert main(["baseline", "set", "v1", "--first", "2", "--db", filled]) == 0
    assert "pinned to runs [1, 2]" in capsys.readouterr().out


def test_damaged_store_is_a_one_line_error(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    db.write_bytes(b"x" * 5000)
    assert main(["history", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err and "Traceback" not in err


def test_subcommands_registered():
    text = build_parser().format_help()
    assert "history" in text and "baseline" in text
