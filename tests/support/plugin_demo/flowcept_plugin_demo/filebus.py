"""A transport that appends each batch frame to one file (length-prefixed)."""
import os
import struct

from flowcept.config import Option
from flowcept.transport import Transport

OPTIONS = (Option("path", str, "", "file the frames are appended to"),)


class FileBus(Transport):
    name = "filebus"

    def __init__(self, config, job):
        super().__init__(config, job)
        if not config.filebus_path:
            raise ValueError("filebus_path is not set")
        self.f = open(config.filebus_path, "ab")

    def publish(self, key, frame):
        self.f.write(struct.pack("<I", len(frame)) + bytes(key) + bytes(frame))

    def flush(self):
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        if not self.f.closed:
            self.flush()
            self.f.close()
