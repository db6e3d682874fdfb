"""The server's Prometheus metrics (`GET /metrics`), named after vLLM's where vLLM has one
(`vllm:` becomes `budget_sampler:`), each labelled with the served model's name.

The engine thread updates them (gauges from the engine's SchedulerStats and token counters from its
GenerationStats after every step, latencies as tokens and samples arrive), so they cost the HTTP
handlers nothing. A "request" is one prompt's engine request (its n samples), as vLLM counts; time
to first token and inter-token latency come from streamed requests, the only ones whose tokens the
engine reports as they are made. Each app has its own registry, so several servers in one process
(the tests) do not collide.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..params import GenerationStats, SchedulerStats

CONTENT_TYPE = CONTENT_TYPE_LATEST
# vLLM's buckets for the same histograms
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                   240.0, 480.0, 960.0, 1920.0, 7680.0)
FINISH_REASONS = ("stop", "eos", "length", "abort")  # the engine's, and abort: cancelled unfinished

# name -> help, in the order /metrics lists them
GAUGES = {
    "num_requests_running": "Requests with at least one sample decoding.",
    "num_requests_waiting": "Requests in the engine with no sample decoding (not started, or all preempted).",
    "num_samples_running": "Samples holding a decode slot.",
    "num_samples_waiting": "Samples not started yet, or preempted.",
    "kv_cache_usage_perc": "Fraction of the KV cache blocks in use (1 = full).",
    "kv_blocks_used": "KV cache blocks in use (prefixes and suffixes).",
    "kv_blocks_total": "KV cache blocks in the pool.",
}
# name -> (help, the GenerationStats field it follows); prometheus_client appends _total
COUNTERS = {
    "prompt_tokens": ("Prompt tokens prefilled (and prompts scored for echo with max_tokens=0).",
                      "prefill_tokens"),
    "generation_tokens": ("Tokens generated (every sample's, EOS included).", "generated_tokens"),
    "num_preemptions": ("Samples preempted (their KV freed, to be recomputed).", "preemptions"),
}


class ServerMetrics:
    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        label, prefix = ["model_name"], "budget_sampler:"

        def child(metric):
            return metric.labels(model_name=model_name)

        self.gauges = {name: child(Gauge(prefix + name, doc, label, registry=self.registry))
                       for name, doc in GAUGES.items()}
        self.counters = {name: child(Counter(prefix + name, doc, label, registry=self.registry))
                         for name, (doc, _) in COUNTERS.items()}
        self.rejected = child(Counter(prefix + "request_rejected", "Requests refused with 503 because the "
                                      "queue was full (--max-queued-requests / --max-queued-samples).",
                                      label, registry=self.registry))
        success = Counter(prefix + "request_success", "Samples finished, by finish reason (abort: cancelled "
                          "unfinished, by a disconnect, a timeout, a failure or shutdown).",
                          label + ["finished_reason"], registry=self.registry)
        self.finished = {reason: success.labels(model_name=model_name, finished_reason=reason)
                         for reason in FINISH_REASONS}
        self.time_to_first_token = child(Histogram(
            prefix + "time_to_first_token_seconds", "From a streamed request's arrival to its first token.",
            label, buckets=TTFT_BUCKETS, registry=self.registry))
        self.inter_token_latency = child(Histogram(
            prefix + "inter_token_latency_seconds", "Between the steps that give a streamed request tokens.",
            label, buckets=ITL_BUCKETS, registry=self.registry))
        self.e2e_request_latency = child(Histogram(
            prefix + "e2e_request_latency_seconds", "From a request's arrival to its last sample's end.",
            label, buckets=LATENCY_BUCKETS, registry=self.registry))
        self._seen = {field: None for _, field in COUNTERS.values()}

    def update(self, scheduler: SchedulerStats, stats: GenerationStats) -> None:
        """After a step: the gauges, and the counters by what the engine's stats grew since the last
        call (the first call only takes its baseline, so whatever ran before serving is not counted)."""
        g = self.gauges
        g["num_requests_running"].set(scheduler.running_requests)
        g["num_requests_waiting"].set(scheduler.waiting_requests)
        g["num_samples_running"].set(scheduler.running_samples)
        g["num_samples_waiting"].set(scheduler.waiting_samples)
        g["kv_blocks_used"].set(scheduler.kv_blocks_used)
        g["kv_blocks_total"].set(scheduler.kv_blocks_total)
        g["kv_cache_usage_perc"].set(scheduler.kv_blocks_used / max(scheduler.kv_blocks_total, 1))
        for name, (_, field) in COUNTERS.items():
            value, seen = getattr(stats, field), self._seen[field]
            if seen is not None and value > seen:  # a stats.reset() restarts the baseline
                self.counters[name].inc(value - seen)
            self._seen[field] = value

    def render(self) -> bytes:
        return generate_latest(self.registry)
