"""What a load run records: each answer counted (ok, errors by class, tokens, stage timings),
the latency percentiles of the measured window, and the report rendered as text."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from loadtest.transports import Outcome


def percentiles(values, qs=(50, 95, 99)) -> dict[str, float | None]:
    """Linear-interpolated percentiles (ordered by construction); None when empty."""
    if len(values) == 0:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(arr, qs))}


@dataclass
class Recorder:
    keep_samples: bool = False
    sent: int = 0
    ok: int = 0
    texts: int = 0
    tokens: int = 0
    server_tokens: int = 0
    server_tokens_seen: int = 0  # ok answers that reported usage
    cache_hits: int = 0
    response_bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    stage_sums: dict[str, float] = field(default_factory=dict)
    stage_counts: dict[str, int] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    first_send: float | None = None
    last_done: float | None = None
    in_flight: int = 0
    late_sends: int = 0  # open loop: sent more than 10 ms after their due time

    def record(self, n_texts: int, n_tokens: int, latency_s: float, out: Outcome, done: float) -> None:
        self.sent += 1
        self.last_done = done
        if out.ok:
            self.ok += 1
            self.texts += n_texts
            self.tokens += n_tokens
            self.latencies_ms.append(latency_s * 1e3)
            self.response_bytes += out.response_bytes
            if out.server_tokens is not None:
                self.server_tokens += out.server_tokens
                self.server_tokens_seen += 1
            if out.cache_hits is not None:
                self.cache_hits += out.cache_hits
            for src in (out.stages or {}), {f"client_{k}": v for k, v in (out.client or {}).items()}:
                for k, v in src.items():
                    self.stage_sums[k] = self.stage_sums.get(k, 0.0) + v
                    self.stage_counts[k] = self.stage_counts.get(k, 0) + 1
            if self.keep_samples:
                self.samples.append({
                    "texts": n_texts, "tokens": n_tokens, "latency_ms": latency_s * 1e3,
                    "stages": out.stages or {}, "client": out.client or {},
                    "cache_hits": out.cache_hits, "batch_size": out.batch_size, "bytes": out.response_bytes,
                })
        else:
            self.errors[out.error or "unknown"] = self.errors.get(out.error or "unknown", 0) + 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{out.error}: {out.detail}")

    def summary(self, window_s: float) -> dict:
        w = max(window_s, 1e-9)
        lat = self.latencies_ms
        stages = {k: self.stage_sums[k] / self.stage_counts[k] for k in sorted(self.stage_sums)}
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors_total": self.sent - self.ok,
            "errors": dict(sorted(self.errors.items())),
            "error_samples": self.error_samples,
            "texts": self.texts,
            "tokens": self.tokens,
            "server_tokens": self.server_tokens if self.server_tokens_seen == self.ok else None,
            "cache_hits": self.cache_hits,
            "window_s": window_s,
            "requests_per_s": self.sent / w,
            "ok_requests_per_s": self.ok / w,
            "texts_per_s": self.texts / w,
            "tokens_per_s": self.tokens / w,
            "latency_ms": {
                **percentiles(lat),
                "mean": float(np.mean(lat)) if lat else None,
                "max": float(np.max(lat)) if lat else None,
            },
            "stages_mean_ms": stages,
            "response_bytes_mean": self.response_bytes / self.ok if self.ok else None,
            "late_sends": self.late_sends,
        }



def format_report(r: dict) -> str:
    lat = r["latency_ms"]
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    lines = [
        f"{r['label'] or r['config']['transport']}: {r['sent']} requests in {r['window_s']:.2f} s "
        f"({r['ok']} ok, {r['errors_total']} errors: {errs})",
        f"  throughput  {r['requests_per_s']:.1f} req/s   {r['texts_per_s']:.1f} texts/s   "
        f"{r['tokens_per_s']:.0f} tokens/s",
        f"  latency ms  p50 {f(lat['p50'])}   p95 {f(lat['p95'])}   p99 {f(lat['p99'])}   max {f(lat['max'])}",
    ]
    if r["stages_mean_ms"]:
        lines.append("  stages ms (mean)  " + "   ".join(f"{k} {v:.2f}" for k, v in r["stages_mean_ms"].items()))
    if r.get("late_sends"):
        lines.append(f"  {r['late_sends']} sends ran >10 ms behind schedule (client saturated?)")
    return "\n".join(lines)
