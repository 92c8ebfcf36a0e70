"""Ray backend: start or join a Ray cluster, map items over actors that each load their state once.

`actor_map(make_state, call, items, config)` creates `workers` actors (one CPU each). Every actor first runs
`make_state()` (e.g. load and sha256-verify the models: a worker without them raises the same `FacecloakError`
the local code raises, unwrapped, so the CLI prints the same one line), then `call(state, item)` per item. Each
actor holds one item at a time; results come back in input order (or as they finish, `ordered=False`).

Reproducibility: torch's float reductions depend on the thread count, so each actor sets torch (and OpenMP/MKL)
to `RayConfig.torch_threads` threads (default 1). A local run gives byte-identical outputs with the same count
(`OMP_NUM_THREADS=1`).

Interrupts: on Ctrl-C / SIGTERM the driver stops handing out items, waits (at most `grace_s`) for the items the
actors are working on, yields their results, kills the actors and re-raises `KeyboardInterrupt`; an item an actor
was killed in the middle of may leave the temp file of an atomic write behind (no `finally` runs in a killed
process): the caller removes those (`facecloak.files.remove_abandoned_temps`, as `facecloak protect` does).
A worker process that dies (out of memory, a native crash) turns its item into `on_lost(item, message)` and is
replaced; the other items go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from facecloak.errors import ConfigError, FacecloakError
from facecloak.runtime import native_cache_env

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

INSTALL_HINT = "pip install 'facecloak[ray]'"
# A local Ray started by facecloak: the object store holds only small messages (paths and reports), so a small
# one keeps Ray's footprint low on a small machine (Ray's own default is 30 % of the RAM).
DEFAULT_OBJECT_STORE_MB = 256
MAX_REPLACEMENTS_PER_WORKER = 3


class RayUnavailableError(FacecloakError):
    """The `ray` extra is not installed."""


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide to run.

    address: None starts a local Ray sized to this machine (stopped afterwards); "auto", "HOST:PORT" or
    "ray://HOST:10001" joins an existing cluster (left running). workers: actors, default one per CPU of the
    cluster divided by torch_threads. torch_threads: intra-op threads per actor (see the module docstring).
    object_store_mb: object store of a local Ray we start. grace_s: how long an interrupt waits for the items
    in progress.
    """

    address: str | None = None
    workers: int | None = None
    torch_threads: int = 1
    object_store_mb: int = DEFAULT_OBJECT_STORE_MB
    grace_s: float = 120.0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.torch_threads < 1:
            raise ConfigError(f"torch threads per worker must be at least 1, got {self.torch_threads}")
        if self.object_store_mb < 80:
            raise ConfigError(f"the Ray object store needs at least 80 MB, got {self.object_store_mb}")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(f"the Ray backend needs Ray: {INSTALL_HINT}") from None
    return ray


def worker_env(config: RayConfig) -> dict[str, str]:
    """Environment of every Ray worker: thread counts, oneDNN's cache bound (`facecloak.runtime`), and
    FACECLOAK_HOME when the driver sets it (a model cache on a filesystem every node mounts at the same path)."""
    threads = str(config.torch_threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **native_cache_env()}
    if os.environ.get("FACECLOAK_HOME"):
        env["FACECLOAK_HOME"] = os.environ["FACECLOAK_HOME"]
    return env


@contextlib.contextmanager
def ray_session(config: RayConfig) -> Iterator[Any]:
    """The `ray` module, initialised: reuses a Ray this process already runs, else starts a local one (no
    dashboard, small object store, `workers` CPUs or the machine's) or joins `config.address`; shuts down what it
    started. Keeps the caller's SIGTERM handler (ray.init installs its own)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # worker failures come back as exceptions or reports, not as log lines
        "logging_level": logging.ERROR,
        "runtime_env": {"env_vars": worker_env(config)},
    }
    if config.address is None:
        cpus = os.cpu_count() or 1
        kwargs.update(num_cpus=max(cpus, (config.workers or 1) * config.torch_threads),
                      object_store_memory=config.object_store_mb * 2**20)
    else:
        kwargs["address"] = config.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {config.address!r}" if config.address else "a local Ray"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FacecloakError(f"cannot start or join {where}: {first} (start a cluster with `ray start --head`, "
                             "or leave out --ray-address to run a local Ray)") from None
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    try:
        yield ray
    finally:
        ray.shutdown()


class _Host:
    """A Ray actor's body: builds the caller's state once, then runs `call(state, item)` per item."""

    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.state: Any = None
        self.call: Callable[[Any, Any], Any] | None = None

    def setup(self, make_state: Callable[[], Any], call: Callable[[Any, Any], Any]) -> int:
        self.state = make_state()
        self.call = call
        return os.getpid()

    def run(self, item: Any) -> Any:
        assert self.call is not None, "setup() runs first"
        return self.call(self.state, item)


def _unwrap(ray: Any, exc: BaseException) -> BaseException:
    """The exception a worker raised, as if raised here (FacecloakError keeps its one-line message)."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        return cause
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return FacecloakError(f"a Ray worker failed: {first}")


class Sized(Generic[T]):
    """An iterator that knows its length in advance (progress bars show N of M)."""

    def __init__(self, iterator: Iterator[T], length: int) -> None:
        self._iterator = iterator
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[T]:
        return self._iterator


def actor_map(
    make_state: Callable[[], S],
    call: Callable[[S, T], R],
    items: Sequence[T],
    config: RayConfig,
    *,
    on_lost: Callable[[T, str], R] | None = None,
    ordered: bool = True,
) -> Sized[R]:
    """`call(state, item)` for every item on Ray actors; `make_state` and `call` must be picklable (module-level
    functions or functools.partial of them). Ray starts (or is joined) on the first `next()`, and stops when the
    iterator is exhausted or closed. on_lost: result for an item whose worker process died (None: raise)."""
    return Sized(_actor_map(make_state, call, list(items), config, on_lost, ordered), len(items))


def _actor_map(
    make_state: Callable[[], S],
    call: Callable[[S, T], R],
    items: list[T],
    config: RayConfig,
    on_lost: Callable[[T, str], R] | None,
    ordered: bool,
) -> Iterator[R]:
    if not items:
        return
    with ray_session(config) as ray:
        remote_host = ray.remote(num_cpus=config.torch_threads, max_restarts=0)(_Host)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = min(len(items), config.workers or max(1, cpus // config.torch_threads))

        def start(count: int) -> list[Any]:
            actors = [remote_host.remote(config.torch_threads) for _ in range(count)]
            try:
                ray.get([a.setup.remote(make_state, call) for a in actors])
            except ray.exceptions.RayError as exc:
                for a in actors:
                    ray.kill(a)
                raise _unwrap(ray, exc) from None
            return actors

        actors = start(n)
        live = set(actors)
        replacements = 0
        pending = deque(range(len(items)))
        inflight: dict[Any, tuple[int, Any]] = {}
        ready: dict[int, R] = {}
        next_out = 0
        free = list(actors)
        try:
            while pending or inflight:
                while free and pending:
                    index, actor = pending.popleft(), free.pop()
                    inflight[actor.run.remote(items[index])] = (index, actor)
                try:
                    done, _ = ray.wait(list(inflight), num_returns=1)
                except KeyboardInterrupt:
                    for index in sorted(ready):  # finished but waiting for an earlier item
                        yield ready.pop(index)
                    yield from _drain(ray, inflight, config.grace_s)
                    raise
                for ref in done:
                    index, actor = inflight.pop(ref)
                    try:
                        ready[index] = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:  # the worker process died: this item fails
                        if on_lost is None:
                            raise _unwrap(ray, exc) from None
                        ready[index] = on_lost(items[index], f"the Ray worker died ({type(exc).__name__})")
                        live.discard(actor)
                        replacements += 1
                        if replacements > MAX_REPLACEMENTS_PER_WORKER * n:
                            raise FacecloakError(f"{replacements} Ray workers died; stopping (see `ray logs`, "
                                                 "often out of memory: fewer --workers)") from None
                        (actor,) = start(1)
                        live.add(actor)
                    except ray.exceptions.RayTaskError as exc:
                        raise _unwrap(ray, exc) from None
                    free.append(actor)
                if ordered:
                    while next_out in ready:
                        yield ready.pop(next_out)
                        next_out += 1
                else:
                    for index in sorted(ready):
                        yield ready.pop(index)
        finally:
            for actor in live:
                ray.kill(actor)


def _drain(ray: Any, inflight: dict[Any, tuple[int, Any]], grace_s: float) -> Iterator[Any]:
    """Results of the items in progress that finish within `grace_s` (their outputs are complete)."""
    deadline = time.monotonic() + grace_s
    refs = list(inflight)
    finished: list[tuple[int, Any]] = []
    while refs and time.monotonic() < deadline:
        done, refs = ray.wait(refs, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        for ref in done:
            with contextlib.suppress(ray.exceptions.RayError):
                finished.append((inflight[ref][0], ray.get(ref)))
    for _, result in sorted(finished, key=lambda pair: pair[0]):
        yield result
