"""Flowcept's consumers (``flowcept.flowceptor.consumers``).

``BaseConsumer``: Flowcept's way to write a custom store: subclass it and
define ``message_handler(msg) -> bool``.  Here a consumer is a store of the
project's keeper (``ConsumerStore``, through the same Store interface as
LMDB and MongoDB): each batch the keeper reads is turned into Flowcept's
messages (workflow, agent and task documents) and handed to
``message_handler`` one by one, and the batch is acknowledged only after
the handler returned for all of them.  ``start()`` runs such a keeper in a
thread of this process; ``message_handler`` returning False stops it.  A
batch redelivered after a crash may be handed over again; within one
process the consumer never sees a batch twice.

``DocumentInserter``: Flowcept's default consumer, the one that writes the
configured database: here the in-process keeper of
``flowcept.compat.persistence``.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from flowcept.store import Store

log = logging.getLogger("flowcept")


def messages_of_frame(frame) -> List[dict]:
    """Flowcept's messages of one batch frame: its workflow and agent
    documents, then its tasks."""
    from flowcept.compat import documents as D
    from flowcept.flowcept_api import db as reading
    from flowcept.native.batch import Batch
    from flowcept.store.summary import workflow_docs
    batch = Batch(frame, check=False)
    merged: Dict[int, dict] = {}
    for wf, doc in workflow_docs(batch):
        merged.setdefault(wf, {}).update(doc)
    rows, _ = reading.read_stores([reading.frames_store([bytes(frame)])])
    wfs, entities = D.split_records(merged)
    out: List[dict] = [D.workflow_document(wf, d) for wf, d in wfs.items()]
    out += [dict(a, type="agent") for a in entities["agents"].values()]
    out += D.task_documents(rows, wfs)
    return out


class ConsumerStore(Store):
    """A BaseConsumer as a store of the keeper (see the module docstring)."""

    name = "consumer"
    location_kind = "url"

    def __init__(self, consumer: "BaseConsumer", config=None):
        super().__init__(f"consumer:{type(consumer).__name__}", config, readonly=False)
        self.consumer = consumer
        self._seen: set = set()
        self._staged: List[Tuple[bytes, list]] = []

    def stage(self, key: bytes, frame) -> int:
        key = bytes(key)
        if key in self._seen or any(k == key for k, _ in self._staged):
            return 0
        self._staged.append((key, messages_of_frame(frame)))
        return 1

    def commit_staged(self) -> None:
        staged, self._staged = self._staged, []
        for key, msgs in staged:
            for msg in msgs:
                if self.consumer.message_handler(msg) is False:
                    self.consumer._stop_requested.set()
            self._seen.add(key)

    def abort_staged(self) -> None:
        self._staged = []

    def has(self, key: bytes) -> bool:
        return bytes(key) in self._seen

    def scan(self, keys=None, zero_copy=False):
        return iter(())

    def summaries(self):
        return iter(())

    def workflows(self) -> dict:
        return {}

    def stats(self) -> dict:
        return {"consumer": type(self.consumer).__name__, "batches": len(self._seen)}

    def close(self) -> None:
        self._staged = []


def consumer_store_specs(consumers: Sequence) -> List[Tuple[str, str]]:
    """(backend, location) specs for the keeper of consumer objects or
    classes: each is registered as a store backend of this process."""
    from flowcept import registry
    specs = []
    for c in consumers or ():
        consumer = c() if isinstance(c, type) else c
        name = f"flowcept-consumer-{id(consumer):x}"
        registry.register("store", name,
                          lambda location, config=None, readonly=False, _c=consumer:
                          ConsumerStore(_c, config))
        specs.append((name, name))
    return specs


class BaseConsumer:
    """Flowcept's base of custom consumers: define ``message_handler``."""

    def __init__(self, allow_mq_disabled: bool = False):
        from flowcept.compat.logger import FlowceptLogger
        self.logger = FlowceptLogger()
        self._persistence = None
        self._stop_requested = threading.Event()
        self._watch: Optional[threading.Thread] = None

    def message_handler(self, msg_obj: Dict[str, Any]) -> bool:
        """One message (a dict); return False to stop consuming."""
        raise NotImplementedError

    def start(self, target=None, args: Tuple = (), threaded: bool = True, daemon: bool = False):
        """Consumes the configured transport in a keeper of this process
        (``threaded=False``: until message_handler returns False)."""
        from flowcept.compat.persistence import Persistence
        from flowcept.config import process_config
        config = process_config()
        if config.transport == "embedded":
            self.logger.warning("flowcept: no MQ is configured (mq.enabled is false): records are "
                                "stored as they are drained; nothing to consume")
            return self
        self._persistence = Persistence(config, consumers=[self], database=False)
        self._persistence.start()
        self._watch = threading.Thread(target=self._stop_when_asked, daemon=True)
        self._watch.start()
        if not threaded:
            self._watch.join()
        return self

    def _stop_when_asked(self) -> None:
        while not self._stop_requested.wait(0.2):
            if self._persistence is None or not self._persistence.running:
                return
        self.stop_consumption()

    def default_thread_target(self):
        return None

    def stop_consumption(self) -> None:
        p, self._persistence = self._persistence, None
        if p is not None:
            p.stop()
        self._stop_requested.set()


class DocumentInserter:
    """Flowcept's database consumer: the in-process keeper into the
    configured database (``flowcept.compat.persistence``)."""

    def __init__(self, check_safe_stops: bool = True, bundle_exec_id=None):
        from flowcept.compat.logger import FlowceptLogger
        self.check_safe_stops = check_safe_stops
        self.bundle_exec_id = bundle_exec_id
        self.buffer: List[dict] = []
        self.logger = FlowceptLogger()
        self._persistence = None

    def _handle_task_message(self, message: dict) -> None:
        """Flowcept's per-message step: the task goes into the insert buffer
        (no campaign is made up for a task without one)."""
        self.buffer.append(dict(message))

    def start(self, threaded: bool = True) -> "DocumentInserter":
        from flowcept.compat.persistence import Persistence
        from flowcept.config import process_config
        self._persistence = Persistence(process_config()).start()
        if not threaded:
            self._persistence._thread.join()
        return self

    def stop(self, bundle_exec_id=None) -> None:
        p, self._persistence = self._persistence, None
        if p is not None:
            p.stop()
