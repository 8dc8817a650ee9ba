"""The bulk job's driver: plan (or take up) the job, run the shards not done on Ray Data's actor
pool with a progress bar, then write errors.jsonl, output.jsonl and summary.json."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import orjson

from serving.batch import outputs
from serving.batch.inputs import Shard
from serving.batch.plan import BatchOptions, Job, prepare, verified
from serving.batch.worker import ShardWorker
from serving.settings import Settings

# The progress bar's words while the workers start (load and compile the model).
STARTING = "loading the model"


@dataclass
class Summary:
    output: str
    kind: str
    rows_in: int
    ok: int  # vectors (text inputs) or 200 responses (OpenAI batch files)
    errors: int
    texts: int  # vectors embedded
    tokens: int
    shards: int
    shards_resumed: int  # verified from an earlier run, not redone
    texts_this_run: int
    wall_s: float  # this run, all of it: planning or verifying, Ray's start, the shards, the final files
    ray_start_s: float = 0.0  # starting a local Ray (about 0 when joining one)
    ray_stop_s: float = 0.0  # stopping the local Ray this run started
    shards_s: float = 0.0  # the Ray Data run: actors starting, then reading, embedding and writing shards
    variants: dict = field(default_factory=dict)  # shards each engine variant embedded (`auto` picks per node)

    @property
    def texts_per_s(self) -> float:
        return self.texts_this_run / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "texts_per_s": round(self.texts_per_s, 2)}

    def render(self) -> str:
        what = (f"{self.rows_in:,} rows in, {self.ok:,} vectors out, {self.errors:,} errors"
                if self.kind == "texts" else
                f"{self.rows_in:,} requests in, {self.ok:,} answered ({self.texts:,} vectors), {self.errors:,} errors")
        resumed = f"; {self.shards_resumed} of {self.shards} shards verified from an earlier run" if self.shards_resumed else ""
        ray = f" ({self.ray_start_s:.1f} s of it starting Ray)" if self.ray_start_s >= 0.1 else ""
        engines = ", ".join(f"{v} ({n} shards)" if len(self.variants) > 1 else v for v, n in self.variants.items())
        return (f"embedserve batch: {what}, {self.tokens:,} tokens; variant {engines}\n"
                f"  this run: {self.texts_this_run:,} texts in {self.wall_s:.1f} s{ray}, {self.texts_per_s:,.1f} texts/s{resumed}\n"
                f"  output: {self.output}")


class ProgressCounter:
    """A tiny Ray actor the workers tell as they go (texts embedded, bad rows found)."""

    def __init__(self):
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n

    def get(self) -> int:
        return self.done


def run_batch(opts: BatchOptions, s: Settings | None = None) -> Summary:
    """Plan (or take up) the job, run the shards that are not done on Ray Data, then write
    errors.jsonl, output.jsonl (OpenAI batch files) and summary.json."""
    s = s or Settings()
    t0 = time.perf_counter()
    job = prepare(opts, s)
    done = {sh.index: m for sh in job.shards if (m := verified(job, sh)) is not None}
    pending = [sh for sh in job.shards if sh.index not in done]
    texts_before = sum(m["texts"] for m in done.values())
    timings = {}
    if pending:
        for sh in pending:  # a shard's old files, if any, are not trusted
            job.layout.manifest(sh).unlink(missing_ok=True)
        for folder in (job.layout.shards_dir, job.layout.vectors_dir):  # writes a killed run left half done
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        fresh = run_on_ray(job, pending, done, opts, s, timings)
        done.update({m["shard"]: m for m in fresh})
    return finish(job, done, len(job.shards) - len(pending), texts_before, time.perf_counter() - t0, timings)


def run_on_ray(job: Job, pending: list[Shard], done: dict, opts: BatchOptions, s: Settings, timings: dict) -> list[dict]:
    import ray
    from ray.data import ActorPoolStrategy, DataContext
    from tqdm import tqdm

    from serving.launch import start_ray

    started = not ray.is_initialized()
    t0 = time.perf_counter()
    if started:  # else: this process is connected already (tests, notebooks): use that cluster
        start_ray(s.ray_address, object_store_mb=s.object_store_mb)
    timings["ray_start_s"] = round(time.perf_counter() - t0, 3)
    try:
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts texts
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        progress = ray.remote(num_cpus=0)(ProgressCounter).remote()
        size = pool_size(opts.workers, s, len(pending))
        ds = ray.data.from_items([{"shard": json.dumps(sh.to_dict())} for sh in pending],
                                 override_num_blocks=len(pending))
        # Two shards in flight an actor: the next one waits in the actor's mailbox while it works,
        # instead of being handed over by Ray Data only after the last one's result came back
        # (measured, 20,000 texts on 2 cores: ~110 ms an actor a shard, 10% of the job, gone;
        # loadtest/FINDINGS.md, "The bulk job: a shard in waiting").
        ds = ds.map_batches(
            ShardWorker,
            batch_size=1,
            compute=ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=2),
            fn_constructor_kwargs={"job": job.wire(), "progress": progress},
            num_cpus=s.encoder_num_cpus,
            num_gpus=s.encoder_num_gpus or None,
        )
        unit = "texts" if job.kind == "texts" else "requests"
        # Until the first shard's texts are done the workers load the model (most of a small job):
        # the bar says so, rather than sit at 0 without a word.
        bar = tqdm(total=sum(sh.rows for sh in job.shards), initial=sum(m["rows"] for m in done.values()),
                   unit=f" {unit}", disable=not opts.progress, dynamic_ncols=True, smoothing=0.1, file=sys.stderr,
                   desc=f"{STARTING} ({size} worker{'s' if size > 1 else ''})")
        stop = threading.Event()

        def follow() -> None:
            if bar.disable:  # --no-progress: nothing to show (a disabled bar has no description either)
                return
            base = bar.n

            def catch_up() -> None:
                n = ray.get(progress.get.remote())
                if n and bar.desc:
                    bar.set_description_str("")
                bar.update(base + n - bar.n)

            while not stop.wait(0.5):
                catch_up()
            catch_up()  # the last shards' count: a job that ends between two looks ended below its total

        watcher = threading.Thread(target=follow, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        try:
            manifests = [json.loads(row["manifest"]) for row in ds.iter_rows()]
            timings["shards_s"] = round(time.perf_counter() - t0, 3)
        finally:
            stop.set()
            watcher.join()
            bar.close()
        return manifests
    finally:
        if started:
            t0 = time.perf_counter()
            ray.shutdown()
            timings["ray_stop_s"] = round(time.perf_counter() - t0, 3)


def pool_size(requested: int | None, s: Settings, pending: int) -> int:
    """Actors: as asked, else as many as the cluster's free CPUs (GPUs with
    encoder_num_gpus > 0) hold; never more than there are shards to do."""
    import ray

    if requested:
        n = requested
    else:
        free = ray.available_resources()
        if s.encoder_num_gpus > 0:
            n = int(free.get("GPU", 0) // s.encoder_num_gpus)
        elif s.encoder_num_cpus > 0:
            n = int(free.get("CPU", 0) // s.encoder_num_cpus)
        else:
            n = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(n, pending))


def finish(job: Job, manifests: dict, resumed: int, texts_before: int, wall_s: float, timings: dict) -> Summary:
    lay = job.layout
    ordered = [manifests[sh.index] for sh in job.shards]
    outputs.concat_files([lay.shard_errors(sh) for sh in job.shards], lay.errors_file)
    if job.kind == "openai":
        outputs.concat_files([lay.shard_output(sh) for sh in job.shards], lay.output_file)
    total = lambda key: sum(m[key] for m in ordered)  # noqa: E731
    summary = Summary(
        output=str(lay.root), kind=job.kind, rows_in=total("rows"), ok=total("ok"), errors=total("errors"),
        texts=total("texts"), tokens=total("tokens"), shards=len(ordered), shards_resumed=resumed,
        texts_this_run=total("texts") - texts_before, wall_s=round(wall_s, 3), **timings,
        variants=dict(Counter(m.get("engine", {}).get("variant", "unknown") for m in ordered)),
    )
    if summary.rows_in != summary.ok + summary.errors or summary.rows_in != sum(sh.rows for sh in job.shards):
        raise RuntimeError(f"rows do not add up: {summary}")  # a bug, never a bad row
    outputs.atomic_write(lay.summary_file, orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
    return summary
