"""``flowcept export --format prov-json|prov-provn|prov-xml|prov-rdf``: W3C PROV of a run.

PROV-JSON is streamed from the archive (``flowcept.archive.prov.write_prov_json``:
sections spooled to temporary files, then copied out), with a progress bar
on a terminal and a budget.  A store directory is compacted first into a
cached archive (``--cache-dir``, else a temporary directory).  PROV-N,
PROV-XML and PROV-O (Turtle) go through the ``prov`` library, which holds
the whole document in memory: for large runs prefer PROV-JSON.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Optional

from flowcept.query.limits import BadRequest, Budget

FORMATS = {"json": "application/json", "provn": "text/provenance-notation",
           "xml": "application/xml", "rdf": "text/turtle"}


def export_prov(source_path: str, out: Optional[str], fmt: str = "json", workflow: Optional[str] = None,
                budget: Optional[float] = None, cache_dir: Optional[str] = None,
                progress: Optional[bool] = None) -> Optional[str]:
    """Writes the PROV document of an archive or store directory to ``out``
    (stdout when None); returns the path written (None for stdout)."""
    from flowcept.access.sources import ArchiveSource, StoreSource, open_source
    from flowcept.archive.prov import write_prov_json
    from flowcept.progress import Progress
    if fmt not in FORMATS:
        raise BadRequest(f"format is one of {', '.join('prov-' + f for f in FORMATS)}")
    tmpdir = None
    if cache_dir is None and os.path.isdir(source_path):
        tmpdir = cache_dir = tempfile.mkdtemp(prefix="flowcept-prov-")
    src = open_source(source_path, cache_dir=cache_dir)
    bar = Progress(None, enabled=progress, label=f"prov-{fmt}", unit="task passes")
    target = out if out is not None else None
    tmp = f"{out}.tmp{os.getpid()}" if out is not None else None
    try:
        arch = src if isinstance(src, ArchiveSource) else \
            src.prov_archive() if isinstance(src, StoreSource) else None
        if arch is None:
            raise ValueError(f"PROV export of {source_path} needs an archive or a store directory")
        wf = None if workflow is None else workflow.lower().rjust(16, "0")
        if fmt == "json":
            if tmp is None:
                write_prov_json(arch.archive, sys.stdout.buffer, wf, None, Budget(budget), bar)
                sys.stdout.buffer.write(b"\n")
                sys.stdout.flush()
            else:
                with open(tmp, "wb") as f:
                    write_prov_json(arch.archive, f, wf, None, Budget(budget), bar)
                os.replace(tmp, target)
            return target
        text = convert(arch.archive, fmt, wf, Budget(budget), bar)
        if tmp is None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            return None
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, target)
        return target
    finally:
        bar.close()
        src.close()
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def convert(archive, fmt: str, workflow: Optional[str] = None, budget: Optional[Budget] = None,
            progress=None) -> str:
    """PROV-N, PROV-XML or PROV-O (Turtle) text through the prov library."""
    import io
    from flowcept.archive.prov import write_prov_json
    try:
        from prov.model import ProvDocument
    except ImportError:
        raise BadRequest("PROV-N/XML/RDF need the prov library: pip install 'flowcept[prov]'") from None
    buf = io.BytesIO()
    write_prov_json(archive, buf, workflow, None, budget, progress)
    pdoc = ProvDocument.deserialize(content=buf.getvalue().decode(), format="json")
    if budget is not None:
        budget.check()
    try:
        if fmt == "rdf":
            return pdoc.serialize(format="rdf", rdf_format="turtle")
        return pdoc.serialize(format=fmt)
    except Exception as e:
        if type(e).__name__ == "DoNotExist":   # the prov library lacks that serializer's extra
            raise BadRequest(f"{fmt}: {e}") from None
        raise
