"""`ropewatch card` end to end through the CLI: the team's seed card reproduced exactly from a scores
CSV (the hand-worked figures of ../shared/seeds, 927/184/126/1393 at thr 0.0543), a two-version card
from a backtest result (pictures, history, timing, McNemar, colours by good direction), and bad input
refused with one line and nothing written."""

from __future__ import annotations

import json
import re
from html import unescape
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score
from statsmodels.stats.contingency_tables import mcnemar

from ropewatch_validator.cli.main import main
from support.backtests import two_versions

THR = 0.0543


class Tables(HTMLParser):
    """Text of every cell of every ``<table id=...>``, and the attributes of every element."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a))
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def seed_scores(rng: np.random.Generator) -> pd.DataFrame:
    """2,630 persons: 927 TP, 126 FN (truth correct), 184 FP, 1393 TN (truth wrong) at THR; ~3 per frame."""
    above, below = (lambda n: rng.uniform(THR, 1.0, n)), (lambda n: rng.uniform(0.0, THR * 0.999, n))
    p = np.concatenate([above(927), below(126), above(184), below(1393)])
    truth = ["correct"] * (927 + 126) + ["wrong"] * (184 + 1393)
    order = rng.permutation(p.size)
    return pd.DataFrame(
        {
            "truth": np.array(truth)[order],
            "p_correct": p[order],
            "frame": [f"f{i // 3:04d}" for i in range(p.size)],
        }
    )


def run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_card_from_a_scores_csv_says_the_seed_cards_figures_exactly(tmp_path, capsys):
    df = seed_scores(np.random.default_rng(17))
    csv = tmp_path / "test_scores.csv"
    df.to_csv(csv, index=False)
    rc, out, err = run(
        [
            "card",
            str(csv),
            "--thr",
            str(THR),
            "--version",
            "v20260512",
            "--out",
            str(tmp_path / "c"),
            "--n-boot",
            "300",
        ],
        capsys,
    )
    assert (rc, err) == (0, "") and "model card of v20260512" in out
    ap = f"{average_precision_score(df.truth == 'correct', df.p_correct):.4f}"
    text = (tmp_path / "c" / "card.html").read_text(encoding="utf-8")
    html = Tables(text)
    assert html.tables["test-metrics"][1] == [
        ap,
        "0.8567",
        "0.8344",
        "0.8803",
        "0.8821",
        "0.0543",
        "927/184/126/1393",
    ]
    per_class = {row[0]: row[1:] for row in html.tables["per-class"][1:]}
    assert [c.split(" [")[0] for c in per_class["wrong"]] == ["0.9171", "0.8833", "0.8999", "1,577"]
    assert [c.split(" [")[0] for c in per_class["correct"]] == ["0.8344", "0.8803", "0.8567", "1,053"]
    assert html.tables["confusion"][1:] == [
        ["wrong", "1,393", "184", "1,577"],
        ["correct", "126", "927", "1,053"],
        ["col total", "1,519", "1,111", "2,630"],
    ]
    md = (tmp_path / "c" / "card.md").read_text(encoding="utf-8")
    assert f"| {ap} | 0.8567 | 0.8344 | 0.8803 | 0.8821 | 0.0543 | 927/184/126/1393 |" in md
    assert re.search(
        r"^\| wrong \| 0\.9171 \[[^]]+\] \| 0\.8833 \[[^]]+\] \| 0\.8999 \[[^]]+\] \| 1577 \|$", md, re.M
    )
    assert re.search(
        r"^\| correct \| 0\.8344 \[[^]]+\] \| 0\.8803 \[[^]]+\] \| 0\.8567 \[[^]]+\] \| 1053 \|$", md, re.M
    )
    assert "| col total | 1519 | 1111 | 2630 |" in md
    assert "2,630 persons in 877 frames" in md  # ceil(2630 / 3) clusters
    # no frames given: said on the page, and the samples are still listed (8) with the 8 audited mistakes
    assert "Pictures not shown: no frame image was available" in " ".join(text.split())
    assert sum(1 for tag, a in html.elements if tag == "figure") == 16
    assert "no other version in this backtest" in md and "no training history" in md


def test_card_from_a_backtest_compares_versions_with_colours_that_follow_the_good_direction(tmp_path, capsys):
    path = two_versions(tmp_path)
    rc, out, err = run(
        ["card", str(path), "--out", str(tmp_path / "c"), "--images", str(tmp_path / "frames")], capsys
    )
    assert (rc, err) == (0, "") and "model card of v2 against v1" in out
    text = (tmp_path / "c" / "card.html").read_text(encoding="utf-8")
    html = Tables(text)
    result = json.loads(path.read_text())
    pair = result["pairs"][0]
    flips = pair["diffs"]["flips_per_1000"]
    assert flips["low"] > 0  # v2 is significantly worse on flips: red, never green
    row = next(r for r in html.tables["versions"] if r[0].startswith("wrong→correct flips"))
    assert f"Δ +{flips['estimate']:.1f} [{flips['low']:.1f}, {flips['high']:.1f}] · worse" in row[2]
    spans = [a for tag, a in html.elements if tag == "span" and a.get("data-verdict")]
    assert spans and all(("better" in a["class"]) == (a["data-verdict"] == "better") for a in spans)
    assert all("worse" in a["class"] for a in spans if a["data-verdict"] == "worse")
    # McNemar as statsmodels computes it on the same persons
    v1_right = np.array(
        [(p["p_correct"]["v1"] >= 0.5) == (p["truth"] == "correct") for p in result["persons"]]
    )
    v2_right = np.array(
        [(p["p_correct"]["v2"] >= 0.5) == (p["truth"] == "correct") for p in result["persons"]]
    )
    table = [[0, np.sum(v1_right & ~v2_right)], [np.sum(~v1_right & v2_right), 0]]
    assert f">{mcnemar(table, exact=True).pvalue:.4g}</b>" in text
    assert html.tables["history"][0] == ["ep", "train_loss", "val_AP", "val_F1", "val_acc", "val_thr"]
    assert html.tables["history"][2] == ["2", "0.1859", "0.9318", "0.8523", "0.8707", "0.1140"]
    assert html.tables["timing"][1:] == [["v1", "755.0", "cpu", "4"], ["v2", "54.2", "cuda:0", "–"]]
    assert '"best_val_AP": 0.93' in unescape(text)
    # 4 + 4 samples and 8 audited mistakes, each a picture with its box coloured by the truth
    images = [a for tag, a in html.elements if tag == "image"]
    assert len(images) == 16 and all(a["href"].startswith("data:image/jpeg;base64,") for a in images)
    colours = {"wrong": "#c0392b", "correct": "#1e8449"}
    figures = re.findall(r'<figure data-truth="(\w+)">.*?stroke="(#\w+)"', text, re.S)
    assert len(figures) == 16 and all(colours[t] == c for t, c in figures)
    assert "Pictures not shown" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<script" not in text  # offline page
    md = (tmp_path / "c" / "card.md").read_text(encoding="utf-8")
    assert "### v2 vs v1" in md and "| flips_per_1000 (lower is better) |" in md and "| worse |" in md


def test_card_of_the_first_version_is_compared_with_the_other(tmp_path, capsys):
    path = two_versions(tmp_path)
    rc, out, _ = run(["card", str(path), "--out", str(tmp_path / "c"), "--version", "v1"], capsys)
    assert rc == 0 and "model card of v1 against v2" in out
    md = (tmp_path / "c" / "card.md").read_text(encoding="utf-8")
    assert "Compared with: v2." in md and "The checkpoint carries no config block." in md


def test_rows_without_a_known_truth_are_counted_not_dropped(tmp_path, capsys):
    df = pd.DataFrame(
        {
            "truth": ["wrong", "correct", "unknown", "correct", "unknown"],
            "p_correct": [0.1, 0.9, 0.5, 0.2, 0.4],
        }
    )
    df.to_csv(tmp_path / "s.csv", index=False)
    rc, _, err = run(
        ["card", str(tmp_path / "s.csv"), "--thr", "0.5", "--out", str(tmp_path / "c"), "--n-boot", "50"],
        capsys,
    )
    assert (rc, err) == (0, "")
    md = (tmp_path / "c" / "card.md").read_text(encoding="utf-8")
    assert "2 persons left out of every metric: truth 'unknown' 2" in md
    assert "every person is its own frame" in md  # no frame column: the CIs may be too narrow, and it says so


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (
            lambda d: pd.DataFrame({"truth": ["wrong"], "p_correct": [0.1]}).to_csv(d / "s.csv"),
            [],
            "needs --thr",
        ),
        (
            lambda d: pd.DataFrame({"truth": ["wrong"]}).to_csv(d / "s.csv"),
            ["--thr", "0.5"],
            "missing column(s) ['p_correct']",
        ),
        (
            lambda d: pd.DataFrame({"truth": ["wrong", "correct"], "p_correct": [0.1, 1.5]}).to_csv(
                d / "s.csv", index=False
            ),
            ["--thr", "0.5"],
            "row 3: p_correct '1.5' is not a number in [0, 1]",
        ),
        (
            lambda d: pd.DataFrame({"truth": ["wrong"], "p_correct": [0.1], "box": ["1,2,3"]}).to_csv(
                d / "s.csv", index=False
            ),
            ["--thr", "0.5"],
            "row 2: box '1,2,3' is not x1,y1,x2,y2",
        ),
        (
            lambda d: (d / "s.json").write_text('{"schema_version": "1.0"}'),
            [],
            "created: Field required (and 2 more)",
        ),
        (lambda d: (d / "s.json").write_text("{not json"), [], "Invalid JSON"),
        (lambda d: None, [], "cannot read"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, make, extra, message):
    make(tmp_path)
    src = tmp_path / ("s.csv" if (tmp_path / "s.csv").exists() else "s.json")
    rc, out, err = run(["card", str(src), "--out", str(tmp_path / "c"), *extra], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1 and err.startswith("ropewatch card: ")
    assert message in err
    assert not (tmp_path / "c").exists()


def test_unknown_version_and_thr_with_a_backtest_are_refused(tmp_path, capsys):
    path = two_versions(tmp_path)
    for extra, message in (
        (["--version", "v9"], "no version 'v9' in the backtest (it has v1, v2)"),
        (["--thr", "0.3"], "--thr is for a scores CSV"),
        (["--baseline", "v2"], "--baseline v2 is the version the card is about"),
    ):
        rc, _, err = run(["card", str(path), "--out", str(tmp_path / "c"), *extra], capsys)
        assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "c").exists()


def test_a_backtest_without_per_person_scores_still_gets_its_card_and_says_what_is_missing(tmp_path, capsys):
    path = two_versions(tmp_path)
    data = json.loads(path.read_text())
    data["persons"] = []
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data))
    rc, out, err = run(["card", str(bare), "--out", str(tmp_path / "c")], capsys)
    assert (rc, err) == (0, "")
    assert "pictures not shown: the backtest holds no per-person scores" in out
    html = Tables((tmp_path / "c" / "card.html").read_text(encoding="utf-8"))
    assert html.tables["test-metrics"][1][-1] == "{tp}/{fp}/{fn}/{tn}".format(
        **data["versions"][1]["metrics"]
    )
