"""Archive: one self-describing HDF5 file per job, for offline analysis.

    import flowcept.archive as fa
    fa.compact("flowcept-runs/<job>", "job.h5")      # LMDB store(s) -> HDF5, in bounded memory
    a = fa.open("job.h5")                            # Archive: query, lineage, stats
    a.query(activity="diffuse", rank=0).to_pandas()

The file layout is documented in docs/archive-format.md; it is readable with
plain h5py + numpy + msgpack.  h5py is imported only when an archive is
written or opened.
"""
from __future__ import annotations

from flowcept.record.layout import RECORD_DTYPE

MAGIC = "flowcept-archive"
# Version of the archive layout.  A reader accepts every version from 1 up to
# its own; a newer file needs a newer flowcept (docs/archive-format.md).
ARCHIVE_VERSION = 1

# The /tasks columns, derived from RECORD_DTYPE: one dataset per record field.
# Two fields change meaning in the archive: the batch-local activity id
# becomes an id into the archive's global string table (dataset "activity"),
# and the payload offset becomes a 64-bit offset into /payloads.
RENAMED = {"activity_id": "activity"}
WIDENED = {"payload_off": "<u8"}
# Columns the archive adds (ids into /strings).
EXTRA_COLUMNS = [("node", "<u4"), ("job", "<u4")]


def columns():
    """[(dataset name, record field or None, numpy dtype string)] of /tasks, in order."""
    out = []
    for name in RECORD_DTYPE.names:
        dt = WIDENED.get(name, RECORD_DTYPE.fields[name][0].str)
        out.append((RENAMED.get(name, name), name, dt))
    out.extend((n, None, dt) for n, dt in EXTRA_COLUMNS)
    return out


class ArchiveError(ValueError):
    """An archive cannot be read or written; the message names the file and the problem."""


def open(path):  # noqa: A001 - the natural name in a notebook: flowcept.archive.open
    """Opens an archive written by :func:`compact`; returns an :class:`Archive`."""
    from flowcept.archive.hdf5 import Archive
    return Archive(path)


# The submodule flowcept.archive.compact is loaded here (it imports only numpy
# at the top) so that the name ``compact`` below stays the function: use
# importlib.import_module("flowcept.archive.compact") to reach the module.
from flowcept.archive import compact as _compact_module  # noqa: E402

compact = _compact_module.compact


__all__ = ["open", "compact", "ArchiveError", "ARCHIVE_VERSION", "columns"]
