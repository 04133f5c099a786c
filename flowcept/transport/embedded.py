"""The embedded default: no server, the leader writes batches straight into
the node's LMDB shard under ``<run_dir>/<job>/store/<node>/``."""
import os

from flowcept.store import open_store
from flowcept.transport import Transport


class EmbeddedTransport(Transport):
    name = "embedded"

    def __init__(self, config, job):
        super().__init__(config, job)
        path = config.store_dir or os.path.join(job.run_dir, "store")
        self.store = open_store(config.store, os.path.join(path, job.node), config)
        self._pending = []

    def publish(self, key, frame):
        self._pending.append((bytes(key), bytes(frame)))
        if len(self._pending) >= self.config.keeper_batch:
            self.flush()

    def flush(self):
        if self._pending:
            self.store.put_batches(self._pending)  # one transaction, committed on return
            self._pending = []

    def close(self):
        self.flush()
        self.store.close()


BACKEND = EmbeddedTransport
