"""Batch limits and OpenVINO streams, swept on the engine the service runs (in-process, the
corpus, the whole set length-sorted and planned as the raw ceiling of `make bench` plans it):
the numbers the defaults of EMBEDSERVE_MAX_BATCH_SIZE / _MAX_BATCH_TOKENS / _OPENVINO_STREAMS
are picked by.

    python -m loadtest.sweep [--model all-MiniLM-L6-v2] [--variant auto] [--texts 2000] [--runs 3]

Each configuration runs in its own child process (loadtest.engines raw); prints texts/s
(median of the runs) per configuration, best first.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

from loadtest import sysinfo
from loadtest.engines import run_child
from loadtest.workload import Corpus, artifact_dir

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--variant", default="auto")
    p.add_argument("--texts", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sizes", default="32,64,128", help="max batch sizes (texts a run)")
    p.add_argument("--tokens", default="512,1024,2048,4096", help="max padded tokens a run")
    p.add_argument("--streams", default="1,2", help="OpenVINO streams")
    a = p.parse_args(argv)
    adir = artifact_dir(None)
    corpus = Corpus.load(a.model, adir).subset(a.texts)
    m = sysinfo.machine()
    print(f"{m['cpu_model']} [{', '.join(m['cpu_flags'])}], nproc {m['nproc']}, load {m['loadavg']}; "
          f"{a.model} {a.variant}, {len(corpus)} texts", flush=True)
    rows = []
    for size, tokens, streams in itertools.product(*(map(int, x.split(",")) for x in (a.sizes, a.tokens, a.streams))):
        spec_in = dict(model=a.model, artifact_dir=str(adir), variant=a.variant, providers=["cpu"], intra_op_threads=0,
                       max_batch_size=size, max_batch_tokens=tokens, streams=streams, texts=corpus.texts,
                       tokens=corpus.tokens, runs=a.runs)
        result = run_child("raw", spec_in, ROOT / "loadtest" / "results" / "tmp")
        tps = statistics.median(len(corpus) / r["seconds"] for r in result["runs"])
        rows.append((tps, size, tokens, streams, result["variant"], result["precision"]))
        print(f"  size {size:4d} tokens {tokens:5d} streams {streams}: {tps:7.1f} texts/s ({result['variant']}, "
              f"{result['precision']}, {result['batches']} runs)", flush=True)
    print("best first:")
    for tps, size, tokens, streams, variant, precision in sorted(rows, reverse=True):
        print(f"  {tps:7.1f} texts/s  max_batch_size {size}, max_batch_tokens {tokens}, openvino_streams {streams}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
