"""The whole stack on one machine: what ``ecotaxa up``, ``down`` and ``status`` manage.

``up`` starts, in this order, each in its own process group with its log in
``$ECOTAXA_HOME/logs/<name>.log``:

1. ``prefect``: a Prefect server (its database under ``$ECOTAXA_HOME/prefect``);
2. ``dask-scheduler`` and ``dask-workers``: a Dask scheduler and
   ``ECOTAXA_DASK_N_WORKERS`` worker processes of ``ECOTAXA_DASK_THREADS_PER_WORKER``
   threads (with nannies, so a killed worker is replaced);
3. ``runner``: ``python -m deployments.serve``, which registers every stage's
   deployment and runs their flow runs, on that scheduler;
4. ``dashboard``: ``ecotaxa serve``.

Each must answer (its URL, or its registration) before the next starts; if
one does not, the stack is stopped and the error quotes its log. When parts
of a running stack stopped (a crash, a killed process, a restarted server),
``up`` starts just those again. The
database is the instance's (PostgreSQL when ``ECOTAXA_DATABASE_URL`` says so:
it is checked, not started). What runs is recorded in ``$ECOTAXA_HOME/run/stack.json``
(pid and start time of each process, so a recycled pid is never mistaken for
one of ours); ``status`` reads it and asks each service what it is doing;
``down`` stops them in reverse order (SIGTERM to the group, SIGKILL after a
grace period). Everything binds to 127.0.0.1, except the dashboard, which
binds to ``ECOTAXA_DASHBOARD_ADDRESS`` (and always asks for a sign-in), and
the Prefect server, which binds to ``ECOTAXA_PREFECT_ADDRESS``: any other
address than the loopback is refused unless Prefect's own
``PREFECT_SERVER_API_AUTH_STRING`` protects the API (the services started get
it as ``PREFECT_API_AUTH_STRING``). The Dask scheduler never leaves the
loopback: it runs whatever it is sent; a cluster spread over hosts is one of
your own with TLS, given as ``ECOTAXA_DASK_SCHEDULER_ADDRESS``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.settings import Settings

__all__ = ["StackError", "stack_up", "stack_down", "stack_status", "SERVICES"]

SERVICES = ("prefect", "dask-scheduler", "dask-workers", "runner", "dashboard")
_LOCAL = "127.0.0.1"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class StackError(EcoTaxaError):
    """A service of the stack that would not start, or a stack already up."""


@dataclass(frozen=True)
class _Service:
    name: str
    argv: list[str]
    url: str | None
    ready: Callable[[], bool]  # answers: the next service may start
    env: dict[str, str] = field(default_factory=dict)  # on top of the stack's environment


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _urls(settings: Settings) -> dict[str, str]:
    host = settings.dashboard_address if settings.dashboard_address not in ("0.0.0.0", "::") \
        else _LOCAL
    return {"prefect": f"http://{_LOCAL}:{settings.prefect_port}/api",
            "dask-scheduler": f"tcp://{_LOCAL}:{settings.dask_scheduler_port}",
            "dask-dashboard": f"http://{_LOCAL}:{settings.dask_dashboard_port}/status",
            "dashboard": f"http://{host}:{settings.dashboard_port}/"}


def _auth_headers() -> dict[str, str]:
    """Basic auth for a Prefect API protected by an auth string (``user:password``)."""
    secret = (os.environ.get("PREFECT_API_AUTH_STRING")
              or os.environ.get("PREFECT_SERVER_API_AUTH_STRING"))
    if not secret:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        request = urllib.request.Request(url, headers=_auth_headers())
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((_LOCAL, port)) == 0


def _api_post(api: str, path: str, body: dict) -> Any:
    request = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **_auth_headers()},
                                     method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _deployments_registered(api: str) -> bool:
    try:
        return int(_api_post(api, "/deployments/count", {})) > 0
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _services(settings: Settings) -> list[_Service]:
    from tasks.dask_cluster import WORKER_ENVIRON

    urls = _urls(settings)
    python = sys.executable
    return [
        _Service("prefect", [_bin("prefect"), "server", "start",
                             "--host", settings.prefect_address,
                             "--port", str(settings.prefect_port), "--analytics-off"],
                 urls["prefect"], lambda: _answers(urls["prefect"] + "/health")),
        _Service("dask-scheduler", [_bin("dask"), "scheduler", "--host", _LOCAL,
                                    "--port", str(settings.dask_scheduler_port),
                                    "--dashboard-address",
                                    f"{_LOCAL}:{settings.dask_dashboard_port}"],
                 urls["dask-scheduler"], lambda: _port_open(settings.dask_scheduler_port)),
        _Service("dask-workers", [_bin("dask"), "worker", urls["dask-scheduler"],
                                  "--host", _LOCAL, "--nworkers", str(settings.dask_n_workers),
                                  "--nthreads", str(settings.dask_threads_per_worker),
                                  "--local-directory", str(settings.work_dir / "dask")],
                 None, lambda: _n_workers(urls["dask-scheduler"]) >= settings.dask_n_workers,
                 # the nanny passes these to the worker processes it starts
                 env=WORKER_ENVIRON),
        _Service("runner", [python, "-m", "deployments.serve"], None,
                 lambda: _deployments_registered(urls["prefect"])),
        _Service("dashboard", [_bin("ecotaxa"), "serve"], urls["dashboard"],
                 lambda: _answers(urls["dashboard"])),
    ]


def _n_workers(address: str) -> int:
    from distributed import Client

    try:
        with Client(address, timeout=3) as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])
    except (OSError, TimeoutError):
        return 0


def _state_path(settings: Settings) -> Path:
    return settings.home / "run" / "stack.json"


def _read_state(settings: Settings) -> dict[str, Any]:
    path = _state_path(settings)
    return json.loads(path.read_text()) if path.is_file() else {}


def _alive(entry: dict[str, Any]) -> bool:
    """Whether the recorded process still runs (the same process: same start time)."""
    try:
        os.waitpid(entry["pid"], os.WNOHANG)  # reap it if it is our own child
    except ChildProcessError:
        pass
    try:
        proc = psutil.Process(entry["pid"])
        return (abs(proc.create_time() - entry["started"]) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _env(settings: Settings) -> dict[str, str]:
    urls = _urls(settings)
    env = {**os.environ, "ECOTAXA_HOME": str(settings.home.resolve()),
           "ECOTAXA_DATABASE_URL": settings.database_url,
           "ECOTAXA_DASK_SCHEDULER_ADDRESS": urls["dask-scheduler"],
           "PREFECT_API_URL": urls["prefect"],
           "PREFECT_HOME": str((settings.home / "prefect").resolve()),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    if env.get("PREFECT_SERVER_API_AUTH_STRING"):
        env["PREFECT_API_AUTH_STRING"] = env["PREFECT_SERVER_API_AUTH_STRING"]
    return env


def _check_exposure(settings: Settings) -> None:
    if settings.prefect_address not in _LOOPBACK \
            and not os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        raise StackError(f"the Prefect API would listen on {settings.prefect_address} without "
                         "protection: set PREFECT_SERVER_API_AUTH_STRING (user:password), or "
                         "keep ECOTAXA_PREFECT_ADDRESS=127.0.0.1")


def _check_database(settings: Settings) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as error:
        raise StackError(f"the database {engine.url.render_as_string(hide_password=True)} "
                         f"does not answer: {error}") from None
    finally:
        engine.dispose()
    return engine.url.render_as_string(hide_password=True)


def _ports(settings: Settings) -> dict[str, list[tuple[str, int]]]:
    return {"prefect": [("Prefect", settings.prefect_port)],
            "dask-scheduler": [("Dask scheduler", settings.dask_scheduler_port),
                               ("Dask diagnostics", settings.dask_dashboard_port)],
            "dashboard": [("dashboard", settings.dashboard_port)]}


def stack_up(settings: Settings, *, timeout_s: float = 180.0) -> dict[str, Any]:
    """Start the stack, or the parts of it that stopped (a crash, a killed process);
    returns what runs where, and which parts this call started. Refuses when all run."""
    previous = _read_state(settings)
    kept = {n: e for n, e in previous.get("services", {}).items() if _alive(e)}
    if len(kept) == len(SERVICES):
        raise StackError(f"the stack is already up ({', '.join(kept)}): "
                         "`ecotaxa status` says more, `ecotaxa down` stops it")
    _check_exposure(settings)
    database = _check_database(settings)
    to_start = [s for s in _services(settings) if s.name not in kept]
    for service in to_start:
        for name, port in _ports(settings).get(service.name, []):
            if _port_open(port):
                raise StackError(f"port {port} (for the {name}) is taken by another program; "
                                 f"choose another in the settings")
    settings.ensure_dirs()
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    _state_path(settings).parent.mkdir(parents=True, exist_ok=True)
    env = _env(settings)
    services: dict[str, dict[str, Any]] = dict(kept)
    state = {"home": str(settings.home.resolve()), "database": database,
             "urls": _urls(settings), "services": services,
             "started_now": [s.name for s in to_start]}
    try:
        for service in to_start:
            log = settings.logs_dir / f"{service.name}.log"
            with open(log, "ab") as out:
                proc = subprocess.Popen(service.argv, env={**env, **service.env}, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, cwd=str(settings.home))
            services[service.name] = {"pid": proc.pid,
                                      "started": psutil.Process(proc.pid).create_time(),
                                      "argv": service.argv, "url": service.url,
                                      "log": str(log)}
            _state_path(settings).write_text(json.dumps(state, indent=2))
            deadline = time.monotonic() + timeout_s
            while not service.ready():
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = (f"exited with code {proc.returncode}" if proc.poll() is not None
                           else f"did not answer within {timeout_s:.0f} s")
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                    raise StackError(f"{service.name} ({' '.join(service.argv)}) {why}; "
                                     f"the end of {log}:\n{tail}")
                time.sleep(0.5)
    except BaseException:
        stack_down(settings)
        raise
    return state


def _stop(entry: dict[str, Any], grace_s: float) -> str:
    if not _alive(entry):
        return "not running"
    pid = entry["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    deadline = time.monotonic() + grace_s
    while _alive(entry):
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.2)
            return "killed"
        time.sleep(0.2)
    return "stopped"


def stack_down(settings: Settings, *, grace_s: float = 20.0) -> dict[str, Any]:
    """Stop what ``stack_up`` started, in reverse order; returns what became of each."""
    state = _read_state(settings)
    done = {}
    for name in reversed(SERVICES):
        entry = state.get("services", {}).get(name)
        if entry is not None:
            done[name] = _stop(entry, grace_s)
    path = _state_path(settings)
    if path.exists():
        path.unlink()
    return {"services": done}


def _doing(name: str, urls: dict[str, str]) -> str:
    """One line on what a running service is doing (empty when it does not answer)."""
    try:
        if name == "prefect":
            counts = {s: int(_api_post(urls["prefect"], "/flow_runs/count", {
                "flow_runs": {"state": {"type": {"any_": [s]}}}}))
                for s in ("RUNNING", "SCHEDULED", "PENDING")}
            return (f"{counts['RUNNING']} flow runs running, "
                    f"{counts['SCHEDULED'] + counts['PENDING']} waiting")
        if name == "dask-scheduler":
            from distributed import Client

            with Client(urls["dask-scheduler"], timeout=3) as client:
                workers = client.scheduler_info(n_workers=-1)["workers"]
                busy = sum(len(v) for v in client.processing().values())
            threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
            return f"{len(workers)} workers, {threads} threads, {busy} tasks running"
        if name == "runner":
            n = int(_api_post(urls["prefect"], "/deployments/count", {}))
            return f"serving {n} deployments"
        if name == "dashboard":
            return "answering" if _answers(urls["dashboard"]) else "not answering"
    except Exception as error:  # a service that does not answer is reported, not fatal
        return f"not answering ({type(error).__name__})"
    return ""


def stack_status(settings: Settings) -> dict[str, Any]:
    """What runs, where, and what each service is doing."""
    state = _read_state(settings)
    urls = state.get("urls") or _urls(settings)
    services = {}
    for name in SERVICES:
        entry = state.get("services", {}).get(name)
        alive = entry is not None and _alive(entry)
        services[name] = {"running": alive, "pid": entry["pid"] if alive else None,
                          "url": entry.get("url") if entry else None,
                          "log": entry.get("log") if entry else None,
                          "doing": _doing(name, urls) if alive else ""}
    return {"up": all(s["running"] for s in services.values()),
            "database": state.get("database"), "urls": urls, "services": services}
