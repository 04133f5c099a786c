"""The null transport: counts and discards.  The template for new backends
(copy this file, add one entry-point line) and the test double for the
leader's drain loop."""
from flowcept.transport import Transport

# Options a backend declares: (name, type, default, one-line doc); their keys
# are "<backend>_<name>" (e.g. FLOWCEPT_NULL_...).  The null transport has none.
OPTIONS = ()


class NullTransport(Transport):
    name = "null"

    def __init__(self, config, job):
        super().__init__(config, job)
        self.batches = 0
        self.bytes = 0

    def publish(self, key, frame):
        self.batches += 1
        self.bytes += len(frame)


BACKEND = NullTransport
