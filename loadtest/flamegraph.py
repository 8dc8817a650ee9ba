"""Where the CPU of a single-text request goes: py-spy flame graphs of the service's processes
(the ingress replica, and Ray Serve's proxy where requests pass one) while single texts arrive
from 32 clients on a local service, cache off (and a cache-hit run: the request path without the
model). Needs py-spy (the test extra) and the right to trace this user's processes.

    python -m loadtest.flamegraph --ingress proxy --name before
    python -m loadtest.flamegraph --name after            # the default ingress (Settings.ingress)

writes loadtest/flamegraphs/<name>-<process>-<scenario>.svg, one per process and scenario:
http (single texts over HTTP, cache off), grpc (the same over gRPC), hit (HTTP, every text
already cached); with --folded also the samples as folded stacks (<...>.folded) for counting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "loadtest" / "flamegraphs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.flamegraph", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ingress", default=None, help="proxy, direct or haproxy (default: Settings.ingress)")
    p.add_argument("--name", required=True, help="file name prefix, e.g. before / after")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of recorded load per scenario")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--artifact-dir", default=None)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--folded", action="store_true", help="also write the samples as folded stacks (.folded)")
    a = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        p.error("py-spy is not installed (pip install 'embedserve[test]')")

    from loadtest.generator import run_load
    from loadtest.load_config import LoadConfig
    from loadtest.service import LocalService, proxy_pids, replica_pids
    from loadtest.workload import Corpus, FixedWorkload, artifact_dir

    adir = artifact_dir(a.artifact_dir)
    corpus = Corpus.load(a.model, adir).subset(a.texts)
    single = FixedWorkload.chunked(corpus.texts, corpus.tokens, 1, "corpus, 1 a request")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    svc = LocalService.start(**({"ingress": a.ingress} if a.ingress else {}))
    written = []
    try:
        common = dict(models=[a.model], artifact_dir=adir, providers=["cpu"], encoder_num_cpus=1)
        apps = {"miss": svc.deploy("flame-nocache", "/nocache", cache="off", **common),
                "hit": svc.deploy("flame-cached", "/cached", cache="memory", **common)}
        run_load(LoadConfig(url=apps["hit"].http_url, model=a.model, concurrency=8, requests=len(single),
                            progress=False, label="prime"), single)
        scenarios = {"http": (apps["miss"], "http"), "grpc": (apps["miss"], "grpc"), "hit": (apps["hit"], "http")}
        for load, (app, transport) in scenarios.items():
            def cfg(**kw):
                return LoadConfig(transport=transport, url=app.http_url, grpc_target=app.grpc_target,
                                  grpc_metadata=app.grpc_metadata, model=a.model, progress=False, **kw)

            run_load(cfg(concurrency=4, requests=64, label="warm-up"), single)
            procs = {f"replica-{d.split('#')[0].lower()}": pid for d, pid in replica_pids(app.name).items()}
            procs.update({f"proxy{i or ''}": pid for i, pid in enumerate(proxy_pids())})
            spies = []
            for proc, pid in procs.items():
                stem = out / f"{a.name}-{proc}-{load}"
                for fmt, suffix in (("flamegraph", ".svg"), ("raw", ".folded")) if a.folded else (("flamegraph", ".svg"),):
                    cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(a.duration)), "--rate", str(a.rate),
                           "--nonblocking", "--format", fmt, "--output", f"{stem}{suffix}"]
                    spies.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
                                  Path(f"{stem}{suffix}")))
            time.sleep(1.0)  # py-spy attaches
            rep = run_load(cfg(concurrency=32, duration_s=a.duration, label=f"single c32 {load}"), single)
            print(f"{a.name} {load}: {rep['requests_per_s']:.1f} requests/s, p50 {rep['latency_ms']['p50'] or 0:.1f} ms, "
                  f"errors {rep['errors_total']}", flush=True)
            for proc, stem in spies:
                _, err = proc.communicate(timeout=a.duration + 60)
                if proc.returncode != 0:
                    print(f"py-spy failed for {stem.name}: {err[-500:]}", file=sys.stderr)
                else:
                    written.append(str(stem))
    finally:
        svc.stop()
    for w in written:
        print("wrote", os.path.relpath(w, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
