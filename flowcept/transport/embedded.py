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

    def publish(self, key, frame):
        # LMDB copies straight from the caller's buffer into the open write
        # transaction; flush() commits every batch of the pass at once.
        self.store.stage(bytes(key), frame)

    def flush(self):
        self.store.commit_staged()

    def close(self):
        self.store.commit_staged()
        self.store.close()


BACKEND = EmbeddedTransport
