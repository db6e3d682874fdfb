"""The app under uvicorn, with vLLM-like graceful shutdown: on SIGTERM or SIGINT the server stops
accepting (the listening socket closes, new requests get 503), lets the requests in flight finish
for up to `shutdown_timeout` seconds, then ends the rest with a 503 error (a stream gets it as its
last event), and returns, so the caller can stop the tensor-parallel ranks and exit 0."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Optional

import uvicorn

from .engine_loop import EngineLoop

FLUSH_SECONDS = 5  # after the cancellation, for the last responses to reach their clients


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine_loop: EngineLoop, shutdown_timeout: float):
        super().__init__(config)
        self.engine_loop, self.shutdown_timeout = engine_loop, shutdown_timeout

    async def shutdown(self, sockets: Optional[list[socket.socket]] = None) -> None:
        self.engine_loop.drain()
        timer = asyncio.get_running_loop().call_later(self.shutdown_timeout, self.engine_loop.cancel_all)
        try:
            await super().shutdown(sockets)  # waits for the connections, at most timeout_graceful_shutdown
        finally:
            timer.cancel()

    @contextlib.contextmanager
    def capture_signals(self):
        """uvicorn re-raises the signal that stopped it once it has shut down, which would kill the
        process before its caller cleans up: this shutdown is the signal's whole effect."""
        with super().capture_signals():
            yield
            getattr(self, "_captured_signals", []).clear()  # (uvicorn < 0.29 does not re-raise)


def serve(app, host: str, port: int, shutdown_timeout: float) -> None:
    """Serve `app` (build_app's) until a signal or `should_exit`, then shut down gracefully."""
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="info",
                            timeout_graceful_shutdown=shutdown_timeout + FLUSH_SECONDS)
    GracefulServer(config, app.state.engine_loop, shutdown_timeout).run()
