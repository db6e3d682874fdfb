"""Load on `budget-sampler serve`: N concurrent clients on loopback, streamed vs not streamed.

The server runs as its own process (`python -m budget_sampler.cli serve`, torch limited to --threads); this
process drives it with --clients concurrent httpx clients, each sending --requests completions in
turn (n samples of --max-tokens forced tokens, fixed seeds, so both modes do the same work). Per
mode: generated tokens per second of wall time, time to first token (first text chunk; not
streamed: the whole answer) and inter-token latency (between a choice's chunks; streamed only),
p50 and p99. Streamed and non-streamed runs alternate --repeats times; each figure is the median.
Bounded: every request has --timeout seconds, and the whole run stops past --time-limit.
Writes bench/results/serve_load_<machine>.json and prints a summary.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROMPT = "def total(xs):\n"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


async def one_request(client: httpx.AsyncClient, body: dict, stream: bool, out: dict) -> None:
    start = time.perf_counter()
    if not stream:
        r = await client.post("/v1/completions", json=body)
        r.raise_for_status()
        out["ttft"].append(time.perf_counter() - start)
        out["tokens"] += r.json()["usage"]["completion_tokens"]
        return
    last: dict[int, float] = {}
    body = dict(body, stream=True, stream_options={"include_usage": True})
    async with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            now, chunk = time.perf_counter(), json.loads(line[6:])
            if chunk.get("usage"):
                out["tokens"] += chunk["usage"]["completion_tokens"]
            for c in chunk["choices"]:
                if c["text"] and not last:
                    out["ttft"].append(now - start)
                if c["index"] in last:
                    out["itl"].append(now - last[c["index"]])
                last[c["index"]] = now


async def run_load(url: str, args, stream: bool) -> dict:
    out = {"ttft": [], "itl": [], "tokens": 0}
    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as client:
        async def client_loop(c: int) -> None:
            for k in range(args.requests):
                body = {"prompt": PROMPT, "n": args.n, "max_tokens": args.max_tokens, "temperature": 1.0,
                        "seed": c * args.requests + k, "ignore_eos": True}
                await one_request(client, body, stream, out)

        start = time.perf_counter()
        await asyncio.gather(*(client_loop(c) for c in range(args.clients)))
        seconds = time.perf_counter() - start
    return {"tokens_per_s": round(out["tokens"] / seconds, 1), "seconds": round(seconds, 2),
            "ttft_p50_ms": round(1000 * percentile(out["ttft"], 50), 1),
            "ttft_p99_ms": round(1000 * percentile(out["ttft"], 99), 1),
            "itl_p50_ms": round(1000 * percentile(out["itl"], 50), 2) if out["itl"] else None,
            "itl_p99_ms": round(1000 * percentile(out["itl"], 99), 2) if out["itl"] else None}


def start_server(args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    server = subprocess.Popen([sys.executable, "-m", "budget_sampler.cli", "serve", "--model", args.model, "--port",
                               str(port), "--max-batch-size", str(args.max_batch_size)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) if runs[0][key] is not None else None for key in runs[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="toy-s")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=2, help="completions each client sends in turn")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the server process")
    p.add_argument("--timeout", type=float, default=300, help="seconds per request")
    p.add_argument("--time-limit", type=float, default=1800, help="seconds for the whole run")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    server, url = start_server(args)
    runs: dict[str, list[dict]] = {"stream": [], "whole": []}
    started = time.monotonic()
    try:
        asyncio.run(run_load(url, argparse.Namespace(**{**vars(args), "requests": 1}), True))  # warm-up
        for _ in range(args.repeats):
            for mode in ("stream", "whole"):
                if time.monotonic() - started > args.time_limit:
                    raise SystemExit(f"stopped past --time-limit {args.time_limit:g} s")
                runs[mode].append(asyncio.run(run_load(url, args, mode == "stream")))
                print(mode, runs[mode][-1], flush=True)
    finally:
        server.terminate()
        server.wait(60)
    import torch
    result = {
        "benchmark": "serve_load",
        "command": "python " + " ".join(sys.argv),
        "machine": platform.node(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "threads": args.threads, "device": "cpu", "torch": torch.__version__,
        "model": args.model, "clients": args.clients, "requests_per_client": args.requests, "n": args.n,
        "max_tokens": args.max_tokens, "repeats": args.repeats,
        "stream": median_of(runs["stream"]), "whole": median_of(runs["whole"]),
        "runs": runs,
    }
    result["stream_over_whole_tokens_per_s"] = round(result["stream"]["tokens_per_s"] /
                                                     result["whole"]["tokens_per_s"], 3)
    out = Path(args.out or Path(__file__).parent / "results" / f"serve_load_cpu-{os.cpu_count()}core.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("stream", "whole", "stream_over_whole_tokens_per_s")}, indent=2))


if __name__ == "__main__":
    main()
