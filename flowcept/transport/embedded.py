"""The embedded default: no server, the leader writes batches straight into
the node's LMDB shard under ``<run_dir>/<job>/store/<node>/``.

A batch whose contents the store refuses (ValueError: e.g. a workflow
record that is not a map) goes to the store's quarantine with its reason,
counted and logged, so that the ring is released and the leader goes on."""
import logging
import os

from flowcept.store import open_store
from flowcept.transport import Transport

log = logging.getLogger("flowcept.transport.embedded")


class EmbeddedTransport(Transport):
    name = "embedded"

    def __init__(self, config, job):
        super().__init__(config, job)
        path = config.store_dir or os.path.join(job.run_dir, "store")
        self.location = os.path.join(path, job.node)
        self.store = open_store(config.store, self.location, config)
        self.refused = 0
        self.delivered = 0
        self._staged = []          # keys since the last commit: checked in the store after it
        self._quarantine = None

    def destination(self) -> str:
        return f"store {self.location}"

    def publish(self, key, frame):
        # LMDB copies straight from the caller's buffer into the open write
        # transaction; flush() commits every batch of the pass at once.
        try:
            self.store.stage(bytes(key), frame)
            self._staged.append(bytes(key))
        except ValueError as e:
            self._refuse(bytes(key), frame, e)
            self.delivered += 1     # durable in the quarantine

    def _refuse(self, key: bytes, frame, err: ValueError) -> None:
        from flowcept.store.quarantine import Quarantine
        if self._quarantine is None:
            self._quarantine = Quarantine(self.location)
        self._quarantine.put([{"reason": "store_refused", "detail": str(err),
                               "routing": {"key": key.hex(), "node": self.job.node,
                                           "job": self.job.job_name}, "frame": bytes(frame)}])
        self.refused += 1
        log.error("flowcept: the store refused batch %s (%s); it is in the quarantine %s",
                  key.hex(), err, self._quarantine.path)

    def flush(self):
        self.store.commit_staged()
        staged, self._staged = self._staged, []
        self.delivered += sum(1 for k in staged if self.store.has(k))

    def close(self):
        self.flush()
        self.store.close()
        if self._quarantine is not None:
            self._quarantine.close()
            self._quarantine = None


BACKEND = EmbeddedTransport
