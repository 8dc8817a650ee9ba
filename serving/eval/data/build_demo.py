"""Rebuild the demo set of `embedserve eval --demo` from the package metadata of a venv.

    python serving/eval/data/build_demo.py [--site-packages DIR]

Each installed distribution with a permissive licence, a one-line `Summary` and a README
(the long description in `*.dist-info/METADATA`) gives:
  * one query: its Summary, the author's own one-line description of the package;
  * up to three documents: the first runs of whole README paragraphs (layout lines dropped,
    as models/data/build_corpus.py cleans READMEs), each grown to a random token budget;
  * qrels: the README's opening run is grade 2 for its package's summary, the next runs grade 1.
Every other package's README runs are the distractors. Nothing is downloaded; the output is
deterministic for the same venv (fixed seed, sorted inputs). See README.md beside this file.
"""

from __future__ import annotations

import argparse
import email
import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
from models.data.build_corpus import MARKUP, clean, tokenizer  # noqa: E402

SEED = 20261206
DOCS_PER_PACKAGE = 3
PERMISSIVE = re.compile(r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC|0BSD|Zlib|MPL)\b", re.I)
SKIP = ("gt_", "embedserve", "all_mpnet", "all_minilm")


def licence(msg) -> str:
    expr = msg.get("License-Expression")
    if expr:
        return expr
    for c in msg.get_all("Classifier") or []:
        if c.startswith("License :: OSI Approved :: "):
            return c.rsplit(" :: ", 1)[1]
    return (msg.get("License") or "").splitlines()[0][:40] if msg.get("License") else ""


def topic(msg) -> str:
    """The first `Topic ::` classifier's second level (what the package is about), else `other`."""
    for c in sorted(msg.get_all("Classifier") or []):
        parts = c.split(" :: ")
        if parts[0] == "Topic" and len(parts) > 1:
            return parts[1]
    return "other"


def runs(body: str, rng: random.Random, tok, most: int) -> list[str]:
    """The first `most` runs of whole paragraphs, each grown to a log-normal token budget."""
    lines = [l for l in body.splitlines() if not MARKUP.match(l)]
    paras = [" ".join(p.split()) for p in "\n".join(lines).split("\n\n") if p.strip()]
    out, cur, budget = [], [], int(rng.lognormvariate(5.0, 0.7))  # median ~150 tokens
    for p in paras:
        cur.append(p)
        if len(tok.encode(" ".join(cur)).ids) >= budget:
            text = clean(" ".join(cur))
            if text:
                out.append(text)
            cur, budget = [], int(rng.lognormvariate(5.0, 0.7))
            if len(out) == most:
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--site-packages", type=Path, default=Path(next(p for p in sys.path if p.endswith("site-packages"))))
    ap.add_argument("--out", type=Path, default=HERE / "demo")
    args = ap.parse_args()
    rng, tok = random.Random(SEED), tokenizer()
    queries, corpus, qrels = [], [], []
    for path in sorted(args.site_packages.glob("*.dist-info/METADATA")):
        if path.parent.name.startswith(SKIP):
            continue
        msg = email.message_from_string(path.read_text(encoding="utf-8", errors="replace"))
        body = msg.get_payload() if isinstance(msg.get_payload(), str) else ""
        summary, lic = clean(msg.get("Summary") or ""), licence(msg)
        if len(body) < 1000 or not summary or len(summary.split()) < 4 or not PERMISSIVE.search(lic):
            continue
        docs = runs(body, rng, tok, DOCS_PER_PACKAGE)
        if not docs:
            continue
        name, version = msg["Name"], msg["Version"]
        queries.append({"_id": f"q-{name}", "text": summary, "topic": topic(msg)})
        for i, text in enumerate(docs):
            did = f"{name}#{i}"
            corpus.append({"_id": did, "title": "", "text": text, "package": f"{name}=={version}", "licence": lic})
            qrels.append((f"q-{name}", did, 2 if i == 0 else 1))
    (args.out / "qrels").mkdir(parents=True, exist_ok=True)
    for name, rows in (("queries.jsonl", queries), ("corpus.jsonl", corpus)):
        (args.out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (args.out / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels), encoding="utf-8")
    print(f"{len(queries)} queries, {len(corpus)} documents, {len(qrels)} judgements -> {args.out}")


if __name__ == "__main__":
    main()
