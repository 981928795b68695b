"""A Dask worker process killed (SIGKILL) while it holds a task: the fault tests' tool."""

from __future__ import annotations

import os
import signal
import threading
import time


class WorkerKiller:
    """Kills the first worker (by address) of ``client``'s cluster as soon as it is processing
    a task whose key starts with ``prefix``; ``killed`` holds the keys it was processing.

    Use as a context manager around the run; ``pid`` is the killed process's.
    """

    def __init__(self, client, prefix: str, poll_s: float = 0.002):
        self._client, self._prefix, self._poll_s = client, prefix, poll_s
        pids = client.run(os.getpid)
        self.victim = sorted(pids)[0]
        self.pid = pids[self.victim]
        self.killed: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        while not self._done.is_set():
            held = [str(k) for k in self._client.processing(workers=[self.victim])[self.victim]
                    if str(k).startswith(self._prefix)]
            if held:
                os.kill(self.pid, signal.SIGKILL)
                self.killed.extend(held)
                return
            time.sleep(self._poll_s)

    def __enter__(self) -> "WorkerKiller":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join()
