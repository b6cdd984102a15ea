"""A bridge on a background thread with its own event loop, for tests and tools.

``BackgroundBridge(settings).start()`` returns once the bridge is subscribed
and has seen the broker (or raises); ``stop()`` asks it to finish what it has
in hand and waits for the thread, re-raising whatever ended the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time

from bridge.consumer import ConsumerSpec
from bridge.loop import LoopTuning
from bridge.metrics import BridgeMetrics
from bridge.service import BridgeService
from sync_core.settings import BridgeSettings

START_TIMEOUT = 15.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.02


class BackgroundBridge:
    """One ``BridgeService`` running on a daemon thread."""

    def __init__(
        self,
        settings: BridgeSettings,
        spec: ConsumerSpec | None = None,
        tuning: LoopTuning | None = None,
        serve_http: bool = False,
    ) -> None:
        self.service = BridgeService(settings, spec=spec, tuning=tuning, serve_http=serve_http)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="background-bridge", daemon=True)

    @property
    def metrics(self) -> BridgeMetrics:
        """The bridge's metrics."""
        return self.service.metrics

    @property
    def http_port(self) -> int:
        """The port of the health endpoint (``serve_http=True`` only)."""
        assert self.service.health is not None
        return self.service.health.port

    def ready(self) -> bool:
        """Whether ``/readyz`` would answer 200."""
        return all(self.service.readiness().values())

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as error:  # reported by start() or stop()
            self._error = error

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.service.run(self._stop)

    def start(self, timeout: float = START_TIMEOUT) -> BackgroundBridge:
        """Start the thread and wait until the bridge is ready."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self._error is not None:
                raise RuntimeError("bridge failed to start") from self._error
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise TimeoutError("bridge did not become ready")
            time.sleep(POLL_INTERVAL)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the bridge to stop, wait for it, and re-raise a failure of its loop."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("bridge did not stop")
        if self._error is not None:
            raise RuntimeError("bridge loop failed") from self._error

    def __enter__(self) -> BackgroundBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
