"""Flowcept's consumption services, the engine's way: the project's keeper
(``flowcept.keeper.service.Keeper``: the same validation, idempotence and
acknowledgement after commit as ``flowcept keeper run``) in a thread of this
process, reading the configured transport and writing the configured
database: the LMDB store at ``databases.lmdb.path``, MongoDB at its URL, and
any custom consumers (``flowcept.compat.consumers.BaseConsumer``).

``Flowcept(start_persistence=True)`` starts one when the transport is not
the embedded one (which stores as it drains) and stops it at ``stop()``,
after the capture session has flushed: the keeper reads until a round comes
back empty, commits, acknowledges and closes, so a query right after
``stop()`` sees every record.  ``Flowcept.start_consumption_services()``
starts one that runs until the next ``Flowcept.stop()`` or the end of the
process.
"""
from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from typing import List, Optional, Sequence, Tuple

log = logging.getLogger("flowcept")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 120.0

_running: List["Persistence"] = []
_lock = threading.Lock()


def store_specs(config) -> List[Tuple[str, str]]:
    """(backend, location) of the configured database: the LMDB store
    directory, or MongoDB's URL."""
    if config.store == "mongodb":
        return [("mongodb", config.mongodb_url or "")]
    return [(config.store, os.path.abspath(config.store_dir or
                                           os.path.join(config.run_dir, "store")))]


def status_dir(config) -> str:
    """Where the keeper keeps its quarantine and status file: beside an LMDB
    store, inside it; for a URL store, under the run directory."""
    if config.store == "mongodb":
        return os.path.abspath(os.path.join(config.run_dir, "keeper"))
    return store_specs(config)[0][1]


class Persistence:
    """One in-process keeper (see the module docstring)."""

    def __init__(self, config, consumers: Sequence = (), name: Optional[str] = None,
                 database: bool = True):
        """``consumers``: custom consumers (BaseConsumer objects or classes)
        written beside the database; ``database=False``: only them."""
        from flowcept.compat.consumers import consumer_store_specs
        self.config = config
        self.stores = ((store_specs(config) if database else [])
                       + consumer_store_specs(consumers))
        self._status_dir = (status_dir(config) if database else
                            os.path.abspath(os.path.join(config.run_dir, "keeper")))
        self.name = name or _free_name()
        self.keeper = None
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._opened = threading.Event()

    def start(self) -> "Persistence":
        from flowcept.keeper.service import Keeper
        self.keeper = keeper = Keeper(self.config, store_dir=self._status_dir,
                                      name=self.name, stores=self.stores)
        opened = self._opened
        real_open = keeper.open

        def open_then_signal():
            real_open()
            opened.set()

        keeper.open = open_then_signal
        self._thread = threading.Thread(target=self._run, name=f"flowcept-keeper-{self.name}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not opened.wait(0.05) and self._thread.is_alive() and time.monotonic() < deadline:
            pass
        if not opened.is_set():
            keeper.stop()
            self._thread.join(5)
            what = self._error if self._error is not None else "no answer"
            raise RuntimeError(
                f"flowcept: start_persistence: the keeper could not open "
                f"{self.config.transport} -> {self.config.store} ({what}); start the MQ and "
                f"database the settings name, or use Flowcept(start_persistence=False)")
        with _lock:
            _running.append(self)
        return self

    def _run(self) -> None:
        try:
            self.keeper.run()
        except BaseException as e:   # reported by start(), or logged when it stops
            self._error = e
            if self._opened.is_set():
                log.error("flowcept: the in-process keeper %s stopped: %s", self.name, e)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open_store(self, location: str):
        """The keeper's open handle of the store at ``location`` (None if it
        writes no such store): readers of this process read through it (an
        LMDB environment is opened once per process)."""
        if not self.running or self.keeper is None:
            return None
        for (backend, loc), store in zip(self.stores, self.keeper.stores):
            if os.path.abspath(str(loc)) == os.path.abspath(str(location)):
                return store
        return None

    def sync(self, timeout: float = 30.0) -> bool:
        """Waits until what was published before the call is stored."""
        if not self.running:
            return False
        return self.keeper.wait_caught_up(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stores what was published before the call, then stops and closes."""
        with _lock:
            if self in _running:
                _running.remove(self)
        if self._thread is None:
            return
        if self._thread.is_alive():
            self.keeper.finish()
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("flowcept: the in-process keeper %s did not catch up in %.0f s; "
                            "what it has not stored stays at the transport for the next "
                            "consumer", self.name, timeout)
                self.keeper.stop()
                self._thread.join(10)


def _free_name() -> str:
    """``<host>-<pid>``, or with ``-<n>`` while other keepers of this process
    run: one consumer name (and one status file) per keeper running at once."""
    base = f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
    taken = {p.name for p in running()}
    n = 0
    name = base
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def running() -> List[Persistence]:
    with _lock:
        return list(_running)


def open_store_of(location: str):
    """An open handle of the store at ``location`` held by a running keeper
    of this process, or None."""
    for p in running():
        store = p.open_store(location)
        if store is not None:
            return store
    return None


def sync_all(timeout: float = 30.0) -> None:
    for p in running():
        p.sync(timeout)


def stop_all() -> None:
    for p in running():
        p.stop()


def _at_exit() -> None:
    """The process ends: its session flushes first, then its keepers store
    what it published."""
    if not running():
        return
    from flowcept.capture import session as runtime
    runtime.end_session()
    stop_all()


atexit.register(_at_exit)
