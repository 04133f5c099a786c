"""The Adapter interface: observe an external system, emit records through
the process's capture session (same ring, same node leader, same store and
archive as every decorated task: there is no side channel).

Lifecycle (what every adapter does, in this order):

1. ``__init__(session=None, checkpoint=None, poll_interval=..., **options)``:
   no I/O; options are checked and a bad one raises ``ConfigError`` with a
   one-line fix.
2. ``start()``: opens the source (read-only where the source allows it),
   loads the checkpoint (the position reached by the previous run) and, for
   ``start(background=True)``, starts a daemon thread that calls ``poll()``
   every ``poll_interval`` seconds.  Subscribing adapters (files with
   inotify, RabbitMQ) open their subscription here.
3. ``poll()``: one pass.  Reads what is new since the checkpoint, emits one
   record per source item (``emit``), then saves the checkpoint.  Returns
   how many records it emitted.  Never raises for a source hiccup: the error
   is counted in ``errors`` and logged once, and the next pass retries from
   the same checkpoint.
4. ``checkpoint`` (the dict ``self.position``) is written after every pass
   with ``flowcept.osutil.atomic_write``; a restarted adapter reads it in
   ``start()`` and resumes exactly after the last emitted item, so a clean
   stop and restart emits nothing twice and misses nothing.  A crash between
   an emission and the checkpoint write re-emits that pass's items on
   restart (at-least-once); their record ids are derived from the source's
   own ids (``source_task_id``), so they carry the same ids as before and a
   reader can drop them.
5. ``stop()``: stops the thread, runs a last ``poll()`` (nothing written by
   the source before ``stop()`` is missed), saves the checkpoint and closes
   the source.  Idempotent.

A new adapter is one file with a subclass that overrides ``open``,
``read_new`` (yield ``Item``s and update ``self.position``) and ``close``,
plus one line in pyproject.toml under ``[project.entry-points."flowcept.adapters"]``.
``NullAdapter`` below is the template.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional

from flowcept.errors import ConfigError
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, STATUS_FINISHED

log = logging.getLogger("flowcept.adapters")

# Record ids of adapters live in origins 0xF00000..0xFFFFFF of the task id
# space (top 24 bits: origin; bit 39: made in C; low 39 bits: sequence).
# Ranks use origins below that, so a derived id never meets a session's own.
_ADAPTER_ORIGIN_BITS = 0xF << 60
_LOW_60 = (1 << 60) - 1
_C_BIT = 1 << 39


def source_task_id(adapter: str, source_id: Any) -> int:
    """A task id derived from an adapter name and the source's own id:
    the same pair gives the same id in every run (59 bits of a blake2b hash)."""
    h = hashlib.blake2b(f"{adapter}\0{source_id}".encode(), digest_size=8).digest()
    v = int.from_bytes(h, "little") & _LOW_60 & ~_C_BIT
    return _ADAPTER_ORIGIN_BITS | v or _ADAPTER_ORIGIN_BITS | 1


@dataclass
class Item:
    """One observed source item, ready to be emitted as a task record."""
    source_id: Any                  # the source's own id (run id, rowid, message id, path+mtime)
    activity: str
    start_ns: int
    end_ns: int
    status: int = STATUS_FINISHED
    used: Optional[dict] = None
    generated: Optional[dict] = None
    tags: Any = None
    custom_metadata: Dict[str, Any] = field(default_factory=dict)
    parent_source_id: Any = None    # another item's source id (parent link), if any
    parent_task_id: int = 0         # or an explicit task id (e.g. a captured task)


class Adapter:
    """Base of every adapter; see the module docstring for the lifecycle."""

    name = "adapter"               # the entry-point name
    default_poll_interval = 1.0

    def __init__(self, session=None, *, checkpoint: Optional[str] = None,
                 poll_interval: Optional[float] = None, **options: Any):
        if options:
            raise ConfigError(f"{self.name} adapter: unknown option(s) {', '.join(sorted(options))}; "
                              f"see `flowcept observe {self.name} --help`")
        self.session = session
        self.checkpoint_path = checkpoint
        self.poll_interval = self.default_poll_interval if poll_interval is None else float(poll_interval)
        if self.poll_interval <= 0:
            raise ConfigError(f"{self.name} adapter: poll_interval must be > 0 (got {poll_interval})")
        self.position: Dict[str, Any] = {}
        self.emitted = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self._lock = threading.RLock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._started = False

    @classmethod
    def from_session(cls, session, **options: Any) -> "Adapter":
        """An adapter whose options come from the session's configuration
        (``<name>_<option>`` keys declared in the adapter module's
        ``OPTIONS``, e.g. ``mlflow_tracking_uri``), overridden by
        ``options``.  ``Flowcept(interceptors=[...])`` builds adapters so."""
        import sys
        module = sys.modules.get(cls.__module__)
        config = getattr(session, "config", None)
        kw: Dict[str, Any] = {}
        for opt in getattr(module, "OPTIONS", ()) if config is not None else ():
            value = getattr(config, f"{cls.name}_{opt.name}", opt.default)
            if value not in (None, "") and value != opt.default:
                kw[opt.name] = value
        kw.update(options)
        return cls(session, **kw)

    # -- what a subclass provides ---------------------------------------
    def source_key(self) -> str:
        """Names the observed source (names the default checkpoint file)."""
        return self.name

    def open(self) -> None:
        """Opens the source (read-only where possible)."""

    def read_new(self) -> Iterator[Item]:
        """Yields what is new since ``self.position`` and advances it."""
        return iter(())

    def close(self) -> None:
        """Closes the source."""

    # -- lifecycle --------------------------------------------------------
    def start(self, background: bool = False) -> "Adapter":
        if self._started:
            return self
        if self.session is None:
            from flowcept.capture.session import ensure_session
            self.session = ensure_session()
            if self.session is None:
                raise ConfigError(f"{self.name} adapter: capture is disabled or misconfigured "
                                  "(see the flowcept log); set FLOWCEPT_ENABLED=1 or fix the setting")
        if self.checkpoint_path is None:
            digest = hashlib.blake2b(self.source_key().encode(), digest_size=6).hexdigest()
            base = os.path.join(self.session.config.run_dir, "adapters")
            self.checkpoint_path = os.path.join(base, f"{self.name}-{digest}.json")
        from flowcept.osutil import private_dir
        private_dir(os.path.dirname(os.path.abspath(self.checkpoint_path)))
        self.position = self.load_checkpoint()
        self.open()
        self._started = True
        if background:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"flowcept-{self.name}",
                                            daemon=True)
            self._thread.start()
        return self

    def poll(self) -> int:
        """One pass; returns the number of records emitted."""
        with self._lock:
            n = 0
            try:
                for item in self.read_new():
                    self.emit(item)
                    n += 1
            except Exception as e:   # a source hiccup: counted, retried on the next pass
                self.errors += 1
                msg = f"{type(e).__name__}: {e}"
                if msg != self.last_error:
                    log.warning("flowcept %s adapter: %s (retrying)", self.name, msg)
                self.last_error = msg
            if n:
                self.save_checkpoint()
            return n

    def run(self, stop: Optional[threading.Event] = None) -> None:
        """Polls until ``stop`` is set (the service mode of ``flowcept observe``)."""
        stop = stop or self._stop
        while not stop.is_set():
            self.poll()
            stop.wait(self.poll_interval)

    def _loop(self) -> None:
        self.run(self._stop)

    def stop(self) -> None:
        if not self._started:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(10.0, 3 * self.poll_interval))
            self._thread = None
        self.poll()
        self.save_checkpoint()
        try:
            self.close()
        finally:
            self._started = False

    def __enter__(self) -> "Adapter":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    # -- checkpoint -------------------------------------------------------
    def load_checkpoint(self) -> Dict[str, Any]:
        try:
            with open(self.checkpoint_path, "rb") as f:
                data = json.loads(f.read() or b"{}")
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise ConfigError(f"{self.name} adapter: checkpoint {self.checkpoint_path} is not "
                              f"valid JSON ({e}); remove it to start from the beginning") from None
        if data.get("source") not in (None, self.source_key()):
            raise ConfigError(f"{self.name} adapter: checkpoint {self.checkpoint_path} belongs to "
                              f"{data.get('source')!r}, not {self.source_key()!r}; pass another "
                              "--checkpoint")
        return dict(data.get("position") or {})

    def save_checkpoint(self) -> None:
        from flowcept.osutil import atomic_write
        if self.checkpoint_path is None:
            return
        with self._lock:
            doc = {"source": self.source_key(), "adapter": self.name, "saved_at": time.time(),
                   "emitted": self.emitted, "position": self.position}
            atomic_write(self.checkpoint_path, json.dumps(doc, sort_keys=True, default=str))

    # -- emission ---------------------------------------------------------
    def task_id_for(self, source_id: Any) -> int:
        return source_task_id(self.name, source_id)

    def emit(self, item: Item) -> int:
        """Pushes one record for item into the session's ring; returns its task id."""
        from flowcept.record.payload import encode
        body: Dict[str, Any] = {}
        if item.used is not None:
            body["used"] = item.used
        if item.generated is not None:
            body["generated"] = item.generated
        if item.tags is not None:
            body["tags"] = item.tags
        meta = {"adapter": self.name, "source_id": str(item.source_id)}
        meta.update(item.custom_metadata)
        body["custom_metadata"] = meta
        tid = self.task_id_for(item.source_id)
        parent = item.parent_task_id or (self.task_id_for(item.parent_source_id)
                                         if item.parent_source_id is not None else 0)
        self.session.push(tid, parent, int(item.start_ns), int(item.end_ns), item.activity,
                          item.status, encode(body), FLAG_PAYLOAD_MSGPACK)
        self.emitted += 1
        return tid


class NullAdapter(Adapter):
    """The template: observes nothing, emits nothing, checkpoints a counter."""

    name = "null"

    def read_new(self) -> Iterator[Item]:
        self.position["passes"] = int(self.position.get("passes", 0)) + 1
        return iter(())
