"""The exceptions that cross layers.  Defined at the bottom so that any layer
can raise or catch them without importing the layer that usually does."""


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message says how to fix it."""


class TransportUnavailable(RuntimeError):
    """The destination cannot take batches now (down, unreachable, refused)."""


class StoreError(OSError):
    """The store cannot commit (disk full, map full, I/O error); the message
    names the store path and the fix.  Retrying later may succeed."""
