"""`budget-sampler serve` as a process: SIGTERM lets the request in flight finish, exits 0 and leaves no
tensor-parallel rank behind."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serving import WAIT_SECONDS

START_SECONDS = 180  # loading torch in two processes on a busy 2-core machine


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_finishes_the_request_in_flight_and_exits_0_without_orphans():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # torch references: faster
    server = subprocess.Popen([sys.executable, "-m", "budget_sampler.cli", "serve", "--model", "toy-xs", "--port",
                               str(port), "--tensor-parallel", "2", "--max-batch-size", "4",
                               "--shutdown-timeout", "60"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        ranks = children(server.pid)
        assert ranks  # the second tensor-parallel rank (and any helper process)
        body = {"prompt": "def f(xs):\n", "n": 4, "max_tokens": 480, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=WAIT_SECONDS) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            server.send_signal(signal.SIGTERM)
            events = [first] + [line for line in lines if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        finished = {c["index"]: c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]}
        assert finished == dict.fromkeys(range(4), "length")  # every sample ran to the end
        assert server.wait(WAIT_SECONDS) == 0
        deadline = time.monotonic() + WAIT_SECONDS
        while any(alive(pid) for pid in ranks):
            assert time.monotonic() < deadline, "a worker process outlived the server"
            time.sleep(0.1)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
