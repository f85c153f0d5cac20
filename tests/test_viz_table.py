"""ft.viz.table: the book's one table style (no index column, short labels, rounded numbers,
wide tables split or transposed)."""
from __future__ import annotations

import math
import re

import pandas as pd

from fa_tutor import viz


def cells(html: str, tag: str = "td") -> list[str]:
    return re.findall(rf"<{tag}(?:\s[^>]*)?>(.*?)</{tag}>", html)


def test_no_index_column_labels_and_rounding() -> None:
    df = pd.DataFrame({"rule": ["bp", "fa"], "test_error": [0.912345, math.nan], "n": [3, 12000],
                       "ok": [True, False], "cos": [0.987654, 0.0123]})
    t = viz.table(df, {"test_error": "test error (%)"}, formats={"test error (%)": 2})
    html = t._repr_html_()
    assert cells(html, "th") == ["rule", "test error (%)", "n", "ok", "cos"]  # no 0…N column
    assert cells(html) == ["bp", "0.91", "3", "yes", "0.988", "fa", "–", "12\u2009000", "no", "0.012"]
    assert list(t.data.columns) == ["rule", "test error (%)", "n", "ok", "cos"]
    assert "0.91" in repr(t) and "index" not in repr(t)


def test_named_index_becomes_a_column_and_decimals() -> None:
    df = pd.DataFrame({"R(T)": [1.00571, 0.5007]}, index=pd.Index(["fa", "bp"], name="rule"))
    html = viz.table(df, decimals=3)._repr_html_()
    assert cells(html, "th") == ["rule", "R(T)"]
    assert cells(html) == ["fa", "1.006", "bp", "0.501"]
    assert cells(viz.table(df, decimals=".2g")._repr_html_())[1] == "1"


def test_split_repeats_the_key_columns() -> None:
    df = pd.DataFrame({"rule": ["bp"], **{f"c{i}": [float(i)] for i in range(7)}})
    t = viz.table(df, split=3, caption="errors")
    assert [list(p.columns) for p in t.parts] == [["rule", "c0", "c1", "c2"], ["rule", "c3", "c4", "c5"],
                                                   ["rule", "c6"]]
    html = t._repr_html_()
    assert html.count("<table") == 3 and "errors (3/3)" in html


def test_transpose_turns_rows_into_columns() -> None:
    s = pd.Series({"fa": 85.61, "kp": 86.34}, name="test accuracy (%)").rename_axis("rule")
    t = viz.table(s, transpose=True, decimals=1)
    assert cells(t._repr_html_(), "th") == ["", "fa", "kp"]
    assert cells(t._repr_html_()) == ["test accuracy (%)", "85.6", "86.3"]


def test_two_level_header_and_repeated_keys() -> None:
    df = pd.DataFrame({"width": [15, 15, 45], "rule": ["FA", "GD", "FA"],
                       "mean": [0.1, 2.5, 0.07], "last": [0.02, 0.03, 0.01]})
    wide = df.pivot(index="width", columns="rule")
    html = viz.table(wide, {"mean": "mean |R − 1|"}, decimals=3)._repr_html_()
    assert '<th colspan="2" class="group">mean |R − 1|</th>' in html
    assert cells(html, "th")[-4:] == ["FA", "GD", "FA", "GD"]
    long = viz.table(df, keys=["width", "rule"], repeat_keys=False)._repr_html_()
    assert cells(long)[:8] == ["15", "FA", "0.10", "0.0200", "", "GD", "2.50", "0.0300"]


def test_numbers_as_text_align_right() -> None:
    df = pd.DataFrame({"rule": ["bp"], "error": ["0.91 ± 0.05"], "note": ["diverged"]})
    html = viz.table(df)._repr_html_()
    assert '<td class="num">0.91 ± 0.05</td>' in html and '<td class="">diverged</td>' in html


def test_transposed_rows_keep_their_own_format_and_text_is_escaped() -> None:
    df = pd.DataFrame({"run": ["a", "b"], "loss increases": [0, 3], "cos": [0.99812, 0.5],
                       "note": ["x < y", "–"]})
    t = viz.table(df, transpose=True, decimals=3)
    body = cells(t._repr_html_())
    assert body == ["loss increases", "0", "3", "cos", "0.998", "0.500", "note", "x &lt; y", "–"]


def test_row_numbers_left_by_a_filter_are_not_shown() -> None:
    df = pd.DataFrame({"rule": ["bp", "fa", "dfa"], "error": [1.0, 2.0, 3.0]})
    html = viz.table(df[df.error > 1])._repr_html_()
    assert cells(html, "th") == ["rule", "error"] and cells(html)[0] == "fa"
