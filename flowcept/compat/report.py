"""Flowcept's workflow card: ``Flowcept.generate_report``.

The records come from the argument, a buffer file (``input_jsonl_path``),
the database (a ``workflow_id`` or all workflows of a ``campaign_id``), or
the current workflow's buffer.  The card says, per workflow, its name,
campaign and time span, and per activity how many tasks ran, how many
finished or failed and how long they took; as Markdown, or as a PDF
(``format="pdf"``, plain text pages, no extra package needed).
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Dict, List, Optional

REPORT_TYPES = {"workflow_card": ("markdown", "pdf"), "provenance_report": ("pdf", "markdown")}


def _records(input_jsonl_path, records, workflow_id, campaign_id) -> List[dict]:
    given = [x is not None for x in (input_jsonl_path, records, workflow_id or campaign_id)]
    if sum(given) > 1:
        raise ValueError("generate_report: give one of records, input_jsonl_path, or "
                         "workflow_id/campaign_id")
    if records is not None:
        return list(records)
    if input_jsonl_path is not None:
        from flowcept.compat import buffer
        return buffer.read(input_jsonl_path)
    if workflow_id or campaign_id:
        from flowcept.compat.dbapi import DBAPI
        db = DBAPI()
        flt = {"workflow_id": workflow_id} if workflow_id else {"campaign_id": campaign_id}
        wfs = db.workflow_query(filter=flt)
        ids = [w["workflow_id"] for w in wfs] or ([workflow_id] if workflow_id else [])
        tasks = db.task_query(filter={"workflow_id": {"$in": ids}}) if ids else []
        return wfs + tasks
    from flowcept.compat.controller import Flowcept
    return Flowcept.read_buffer_file()


def card_statistics(records: List[dict]) -> Dict[str, Any]:
    tasks = [r for r in records if r.get("type", "task") == "task"]
    workflows: Dict[str, dict] = {}
    for r in records:
        if r.get("type") == "workflow":
            workflows.setdefault(r.get("workflow_id"), {}).update(r)
    per: Dict[str, dict] = defaultdict(lambda: {"count": 0, "FINISHED": 0, "ERROR": 0,
                                                 "total_s": 0.0})
    for t in tasks:
        p = per[str(t.get("activity_id", "?"))]
        p["count"] += 1
        if t.get("status") in ("FINISHED", "ERROR"):
            p[t["status"]] += 1
        s, e = t.get("started_at"), t.get("ended_at")
        if isinstance(s, (int, float)) and isinstance(e, (int, float)):
            p["total_s"] += e - s
    return {"workflows": list(workflows.values()), "tasks": len(tasks),
            "activities": {k: dict(v) for k, v in sorted(per.items())}}


def card_lines(stats: Dict[str, Any]) -> List[str]:
    lines = ["# Workflow card", ""]
    for w in stats["workflows"]:
        span = ""
        if isinstance(w.get("started_at"), (int, float)) and isinstance(w.get("ended_at"),
                                                                        (int, float)):
            span = f", {w['ended_at'] - w['started_at']:.3f} s"
        lines.append(f"- workflow `{w.get('workflow_id')}` {w.get('name') or ''} "
                     f"(campaign `{w.get('campaign_id')}`, {w.get('status') or '?'}{span})")
    lines += ["", f"Tasks: {stats['tasks']}", "",
              "| activity | tasks | finished | error | total s |", "|---|---|---|---|---|"]
    for name, p in stats["activities"].items():
        lines.append(f"| {name} | {p['count']} | {p['FINISHED']} | {p['ERROR']} | "
                     f"{p['total_s']:.6f} |")
    return lines


def _pdf_text(s: str) -> str:
    s = s.encode("latin-1", "replace").decode("latin-1")
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(lines: List[str], path: str, per_page: int = 60) -> None:
    """Text lines as a PDF of Courier pages (the PDF 1.4 structure written out)."""
    pages = [lines[i:i + per_page] for i in range(0, max(len(lines), 1), per_page)] or [[]]
    objects: List[bytes] = []
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>")
    for i, page in enumerate(pages):
        text = "BT /F1 9 Tf 36 806 Td 11 TL " + " ".join(
            f"({_pdf_text(line)}) '" for line in page) + " ET"
        stream = text.encode("latin-1")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>"
                       .encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    with open(path, "wb") as f:
        f.write(bytes(out))


def generate_report(report_type: str = "workflow_card", format: str = "markdown",
                    print_markdown: bool = False, output_path: Optional[str] = None,
                    input_jsonl_path: Optional[str] = None, records: Optional[List[dict]] = None,
                    workflow_id: Optional[str] = None,
                    campaign_id: Optional[str] = None) -> Dict[str, Any]:
    if report_type not in REPORT_TYPES:
        raise ValueError(f"report_type {report_type!r}: use one of {', '.join(REPORT_TYPES)}")
    fmt = format.lower()
    if fmt not in REPORT_TYPES[report_type]:
        raise ValueError(f"{report_type} supports format {' or '.join(REPORT_TYPES[report_type])}")
    recs = _records(input_jsonl_path, records, workflow_id, campaign_id)
    stats = card_statistics(recs)
    lines = card_lines(stats)
    ext = "pdf" if fmt == "pdf" else "md"
    path = output_path or f"{report_type.upper()}.{ext}"
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    if fmt == "pdf":
        write_pdf(lines, path)
    else:
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        if print_markdown:
            print("\n".join(lines))
    mode = ("records" if records is not None else "jsonl" if input_jsonl_path is not None
            else "db" if workflow_id or campaign_id else "buffer")
    return {"output_path": os.path.abspath(path), "report_type": report_type, "format": fmt,
            "input_mode": mode, "tasks": stats["tasks"],
            "workflows": len(stats["workflows"]), "activities": stats["activities"]}
