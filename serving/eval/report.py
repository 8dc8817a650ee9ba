"""What `embedserve eval` shows and writes: a table ranked by quality, JSON, and a PNG plot of
quality against bytes per vector (one curve per model; matplotlib, the `eval` extra)."""

from __future__ import annotations

import json
from pathlib import Path

from serving.eval.metrics import MRR_AT, NDCG_AT
from serving.eval.runner import Result

NDCG, MRR = f"ndcg@{NDCG_AT}", f"mrr@{MRR_AT}"


def short(model_id: str) -> str:
    return model_id.rsplit("/", 1)[-1]


def option_name(row: dict) -> str:
    name = f"{row['encoding']} · {row['dims_label']}"
    return name + " · whole docs" if row["truncate"] == "window" else name


def table(result: Result) -> str:
    """Markdown table (a terminal reads it too), best NDCG first."""
    ks = result.options["k"]
    models = {(r["model"], r["variant"], r["input_types"]) for r in result.rows}
    show_model = len(models) > 1
    head = (["#"] + (["model", "variant", "input types"] if show_model else []) +
            ["option", "bytes/vector", NDCG, MRR] + [f"recall@{k}" for k in ks] + ["kept@10" if 10 in ks else f"kept@{ks[-1]}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    kept = "kept@10" if 10 in ks else f"kept@{ks[-1]}"
    for i, r in enumerate(result.rows, 1):
        m = r["metrics"]
        cells = ([str(i)] + ([short(r["model"]), r["variant"], r["input_types"]] if show_model else []) +
                 [option_name(r), f"{r['bytes_per_vector']:,}", f"{m[NDCG]:.3f}", f"{m[MRR]:.3f}"] +
                 [f"{m[f'recall@{k}']:.3f}" for k in ks] + [f"{m[kept]:.3f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def slice_table(result: Result) -> str:
    """NDCG@10 per slice for the full-size options of the first model (every model: the JSON)."""
    if not result.rows:
        return ""
    first = (result.rows[0]["model"], result.rows[0]["variant"], result.rows[0]["input_types"])
    rows = [r for r in result.rows if (r["model"], r["variant"], r["input_types"]) == first and r["dims_label"] == "full"]
    rows.sort(key=lambda r: (r["truncate"] != "end", -r["bytes_per_vector"], r["encoding"]))
    head = ["slice", "queries"] + [option_name(r) for r in rows]
    lines = [f"{NDCG} by slice ({short(first[0])}, {first[1]}, input types {first[2]}):",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    overall = ["all", str(result.dataset["queries"])] + [f"{r['metrics'][NDCG]:.3f}" for r in rows]
    lines.append("| " + " | ".join(overall) + " |")
    for name, n in result.slices.items():
        cells = [name, str(n)] + [f"{r['slices'][name][NDCG]:.3f}" if name in r["slices"] else "–" for r in rows]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(result: Result) -> str:
    lines = []
    for s in result.dataset["skipped"]:
        lines.append(f"skipped {s['count']} {s['what']}: {s['reason']} (e.g. {', '.join(s['examples'])})")
    for n in result.not_run:
        what = " ".join(f"{k}={n[k]}" for k in ("model", "variant", "input_types", "dimensions", "encoding", "truncate") if k in n)
        lines.append(f"not run: {what}: {n['reason']}")
    return "\n".join(lines)


def to_json(result: Result) -> dict:
    rows = [{k: v for k, v in r.items() if k != "run"} for r in result.rows]
    return {"dataset": result.dataset, "options": result.options, "slices": result.slices,
            "results": rows, "not_run": result.not_run}


def write(result: Result, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "eval.json", out / "eval.md"]
    written[0].write_text(json.dumps(to_json(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written[1].write_text("\n\n".join(t for t in (table(result), slice_table(result), notes(result)) if t) + "\n",
                          encoding="utf-8")
    png = plot(result, out / "quality-vs-bytes.png")
    return written + ([png] if png else [])


def plot(result: Result, path: Path) -> Path | None:
    """NDCG@10 against bytes per vector (log scale): each model's options as points, and its
    best quality at each size as a curve. None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None
    markers = {"float": "o", "int8": "s", "uint8": "D", "binary": "v", "binary-rescore": "^"}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    curves: dict[str, list[dict]] = {}
    for r in result.rows:
        if r["truncate"] == "end":
            curves.setdefault(f"{short(r['model'])} ({r['variant']}, input types {r['input_types']})", []).append(r)
    for (label, rows), color in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        best: dict[int, float] = {}
        for r in rows:
            best[r["bytes_per_vector"]] = max(best.get(r["bytes_per_vector"], 0.0), r["metrics"][NDCG])
            ax.scatter(r["bytes_per_vector"], r["metrics"][NDCG], marker=markers.get(r["encoding"], "o"),
                       color=color, s=22, alpha=0.75)
        xs = sorted(best)
        ax.plot(xs, [max(best[b] for b in xs if b <= x) for x in xs], color=color, label=label)
    for enc, m in markers.items():
        ax.scatter([], [], marker=m, color="grey", label=enc)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("bytes per vector (log scale)")
    ax.set_ylabel(NDCG.upper())
    ax.set_title(f"{result.dataset['name']}: {result.dataset['queries']} queries, {result.dataset['documents']} documents")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
