"""The bulk job's benchmark (a part of `make bench`): `embedserve batch` from Parquet to Parquet,
reading and writing included, against the raw engine ceiling on the same texts, and the job's
peak memory on a small and a large corpus (bounded by the shard size, not the corpus size).

  raw ceiling  the ONNX Runtime session the service uses, in a fresh child process, on the
               same texts pre-tokenized, length-sorted (loadtest.engines, as `make bench`)
  job          `embedserve batch` as a user runs it: a fresh process that starts its own local
               Ray, reads the Parquet file, embeds on an actor pool sized to the cores and
               writes Parquet shards; timed from the job's own summary:
                 job      everything but starting and stopping Ray (plan, actors starting, read,
                          embed, write, finish)
                 command  the whole process, Ray's start and stop included
  memory       the job's process tree (driver, Ray's daemons, the encoder actors), PSS summed
               (shared pages counted once), sampled twice a second, for each --memory-rows

The texts are the corpus the repository carries, repeated to the row count (the job has no
cache: a repeated text is embedded again). Each figure is the median of --runs runs.

    python -m loadtest.batch_bench                                    # 20,000 texts; memory at 20k and 200k
    python -m loadtest.batch_bench --rows 200 --memory-rows 200,400 --runs 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from loadtest import sysinfo
from loadtest.engines import run_child
from loadtest.workload import Corpus, artifact_dir

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
TARGET = 0.9  # the job's texts/s over the raw ceiling's


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m loadtest.batch_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000, help="texts of the throughput run")
    p.add_argument("--memory-rows", default="20000,200000", help="corpus sizes whose peak memory is measured")
    p.add_argument("--runs", type=int, default=1, help="runs of the throughput measurement (median)")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--variant", default="auto", help="the engine's variant (default: auto, as the service runs)")
    p.add_argument("--providers", default="cpu")
    p.add_argument("--shard-rows", type=int, default=None, help="the job's --shard-rows (default: its own)")
    p.add_argument("--workers", type=int, default=None, help="the job's --workers (default: sized to the cores)")
    p.add_argument("--artifact-dir", default=None)
    p.add_argument("--workdir", default=str(ROOT / "loadtest" / "results" / "tmp" / "batch"))
    p.add_argument("--json", default=None, help="default: loadtest/results/batch-bench-<time>.json")
    p.add_argument("--markdown", default=None, help="also write the section (table and targets) to this file")
    a = p.parse_args(argv)
    a.memory_rows = sorted({int(x) for x in a.memory_rows.split(",") if x.strip()})
    if a.rows < 1 or a.runs < 1 or any(n < 1 for n in a.memory_rows):
        p.error("--rows, --runs and --memory-rows must be positive")
    return a


def log(msg: str) -> None:
    print(f"[batch-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class TreeMemory:
    """Peak memory of a process and all its descendants (found anew at each sample): PSS
    summed (each shared page counted once over the tree), and the largest single process."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_pss = self.peak_process = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            try:
                pss = proc.memory_full_info().pss
            except psutil.Error:
                continue
            total += pss
            self.peak_process = max(self.peak_process, pss)
        self.peak_pss = max(self.peak_pss, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_corpus(corpus: Corpus, n: int, path: Path, row_group_size: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = corpus.subset(n).texts
    pq.write_table(pa.table({"id": [f"t-{i:07d}" for i in range(n)], "text": texts}), path,
                   row_group_size=row_group_size)
    return path


def run_job(a, adir: Path, source: Path, out: Path) -> dict:
    """One `embedserve batch` in a fresh process (its own local Ray); its summary, wall time and
    peak memory."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "serving.cli", "batch", str(source), str(out), "--model", a.model,
           "--variant", a.variant, "--providers", a.providers, "--artifact-dir", str(adir), "--no-progress"]
    if a.shard_rows:
        cmd += ["--shard-rows", str(a.shard_rows)]
    if a.workers:
        cmd += ["--workers", str(a.workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemory(proc.pid) as mem:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"embedserve batch failed ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    texts = summary["texts_this_run"]
    job_s = summary["wall_s"] - summary["ray_start_s"] - summary["ray_stop_s"]
    return {"summary": summary, "command_s": wall, "job_s": job_s, "job_texts_per_s": texts / job_s,
            "command_texts_per_s": texts / wall, "peak_pss_bytes": mem.peak_pss,
            "peak_process_bytes": mem.peak_process}


def median(xs):
    return statistics.median(xs)


def render(a, meta: dict, raw: dict, raw_tps: float, runs: list[dict], memory: dict[int, dict]) -> tuple[str, float]:
    job_tps = median([r["job_texts_per_s"] for r in runs])
    cmd_tps = median([r["command_texts_per_s"] for r in runs])
    ratio = job_tps / raw_tps
    first = runs[0]["summary"]
    m = meta["machine"]
    lines = [
        "## Bulk embedding (`embedserve batch`, Ray Data)",
        "",
        f"Generated by `{meta['command']}` on {meta['date']}: nproc {m['nproc']}, {m['cpu_model']}, load average "
        f"at start {m['loadavg']}; {a.model}, variant `{a.variant}` (ran: raw `{raw['variant']}`, job "
        f"`{', '.join(first['variants'])}`), providers `{a.providers}`; {a.rows:,} texts "
        f"(the corpus repeated), {first['tokens']:,} tokens, {first['shards']} shards; median of {a.runs} run(s).",
        "",
        "| measurement | texts/s | x raw | seconds |",
        "|---|---:|---:|---:|",
        f"| raw ceiling: the engine's session ({raw['engine']}), in-process, pre-tokenized | {raw_tps:,.1f} | 1.00 | "
        f"{a.rows / raw_tps:,.1f} |",
        f"| job: Parquet -> Parquet, reading and writing included (Ray's start and stop excluded) | {job_tps:,.1f} | "
        f"{ratio:.2f} | {median([r['job_s'] for r in runs]):,.1f} |",
        f"| command: the whole `embedserve batch` process (Ray's start and stop included) | {cmd_tps:,.1f} | "
        f"{cmd_tps / raw_tps:.2f} | {median([r['command_s'] for r in runs]):,.1f} |",
        "",
        "| rows | peak memory of the job (PSS, whole process tree) MiB | largest process MiB |",
        "|---:|---:|---:|",
    ]
    for n, r in sorted(memory.items()):
        lines.append(f"| {n:,} | {r['peak_pss_bytes'] / MiB:,.0f} | {r['peak_process_bytes'] / MiB:,.0f} |")
    verdict = "PASS" if ratio >= TARGET else "MISS"
    lines += ["", "| target | measured | verdict |", "|---|---:|---|",
              f"| job >= {TARGET}x raw ceiling | {ratio:.2f}x | {verdict} |", ""]
    return "\n".join(lines), ratio


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from serving.settings import Settings

    s = Settings()
    adir = artifact_dir(a.artifact_dir)
    machine = sysinfo.machine()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = Corpus.load(a.model, adir)
    row_group = a.shard_rows or 4096  # row groups of a shard's size: a shard reads only its own

    log(f"raw ceiling on {a.rows:,} texts")
    spec_in = dict(model=a.model, artifact_dir=str(adir), variant=a.variant, providers=a.providers.split(","),
                   intra_op_threads=s.intra_op_threads, max_batch_size=s.max_batch_size,
                   max_batch_tokens=s.max_batch_tokens, streams=s.openvino_streams, texts=corpus.subset(a.rows).texts,
                   runs=a.runs)
    raw = run_child("raw", spec_in, work)
    raw_tps = median([a.rows / r["seconds"] for r in raw["runs"]])
    log(f"raw: {raw_tps:,.1f} texts/s")

    runs, memory = [], {}
    for n in sorted({a.rows, *a.memory_rows}):
        source = write_corpus(corpus, n, work / f"corpus-{n}.parquet", row_group)
        for run in range(a.runs if n == a.rows else 1):
            log(f"job on {n:,} texts (run {run + 1})")
            r = run_job(a, adir, source, work / f"out-{n}")
            log(f"job: {r['job_texts_per_s']:,.1f} texts/s ({r['command_texts_per_s']:,.1f} with Ray's start), "
                f"peak {r['peak_pss_bytes'] / MiB:,.0f} MiB")
            if n == a.rows:
                runs.append(r)
            memory[n] = r if n not in memory else max(memory[n], r, key=lambda x: x["peak_pss_bytes"])
            assert r["summary"]["ok"] == n and r["summary"]["errors"] == 0, r["summary"]
        shutil.rmtree(work / f"out-{n}", ignore_errors=True)
        (work / f"corpus-{n}.parquet").unlink(missing_ok=True)

    argv_shown = sys.argv[1:] if argv is None else argv
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python -m loadtest.batch_bench", *argv_shown]), "machine": machine}
    md, ratio = render(a, meta, raw, raw_tps, runs, memory)
    out_json = Path(a.json or ROOT / "loadtest" / "results" / f"batch-bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"meta": meta, "args": vars(a), "raw": raw, "raw_texts_per_s": raw_tps,
                                    "runs": runs, "memory": {str(k): v for k, v in memory.items()},
                                    "ratio": ratio}, indent=2, default=str))
    if a.markdown:
        Path(a.markdown).write_text(md)
    print(md)
    print(f"wrote {out_json}" + (f" and {a.markdown}" if a.markdown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
