"""What `embedserve eval --demo` prints and writes: a table ranked by NDCG@10 (best first), the
slices, eval.json with the same figures, eval.md, and a PNG plot of quality against bytes per
vector; the demo set ships with the package and runs offline."""

from __future__ import annotations

import json
import re

import matplotlib.image

from serving.eval.command import DEMO
from serving.eval.data import load
from tests.support.eval import run_cli


def test_the_demo_prints_a_ranked_table_and_writes_json_markdown_and_a_plot(capsys, tmp_path):
    code, out, err = run_cli(capsys, "--demo", "--variant", "auto", "--dimensions", "128,full",
                             "--encoding", "float,int8,binary,binary-rescore", "--out", str(tmp_path))
    assert code == 0, err
    assert "%|" in err  # the progress bar while embedding
    report = json.loads((tmp_path / "eval.json").read_text())
    ds = load(DEMO)
    assert report["dataset"]["queries"] == len(ds.query_ids) and report["dataset"]["documents"] == len(ds.doc_ids)
    rows = report["results"]
    assert len(rows) == 2 * 4 + 1  # two sizes x four encodings, and float embedded whole
    ndcg = [r["metrics"]["ndcg@10"] for r in rows]
    assert ndcg == sorted(ndcg, reverse=True)
    table = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(table) == len(rows)
    for line, row in zip(table, rows):
        assert f"| {row['metrics']['ndcg@10']:.3f} |" in line and f"| {row['bytes_per_vector']:,} |" in line
    assert {"long docs", "topic=Internet"} <= set(report["slices"]) and "| long docs |" in out
    assert (tmp_path / "eval.md").read_text().startswith("| # | option |")
    png = matplotlib.image.imread(tmp_path / "quality-vs-bytes.png")
    assert png.shape[0] > 300 and png.shape[1] > 500
