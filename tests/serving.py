"""The server app under uvicorn in a thread on a free loopback port, for tests that need HTTP."""
import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

from budget_sampler.server.app import build_app
from budget_sampler.server.protocol import Limits

WAIT_SECONDS = 60  # upper bound for a condition the test waits for, not a timing assertion


@contextmanager
def serving(sampler, limits=Limits(), model_id="tiny", access_log=False):
    """The app under uvicorn in a thread, on a free loopback port; stopped on exit."""
    app = build_app(sampler, model_id, limits, access_log)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive())
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(WAIT_SECONDS)
        sock.close()
    assert not thread.is_alive()


def wait_until(condition):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)
