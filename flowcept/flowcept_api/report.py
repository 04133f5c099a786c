"""A Flowcept-style provenance card from task and workflow messages."""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List


def provenance_card(records: List[dict], output_path: str) -> dict:
    tasks = [r for r in records if r.get("type", "task") == "task"]
    workflows = [r for r in records if r.get("type") == "workflow"]
    per: Dict[str, dict] = defaultdict(lambda: {"count": 0, "FINISHED": 0, "ERROR": 0,
                                                 "total_s": 0.0})
    for t in tasks:
        p = per[t.get("activity_id", "?")]
        p["count"] += 1
        st = t.get("status")
        if st in ("FINISHED", "ERROR"):
            p[st] += 1
        if isinstance(t.get("started_at"), (int, float)) and isinstance(t.get("ended_at"), (int, float)):
            p["total_s"] += t["ended_at"] - t["started_at"]
    stats = {"workflows": len(workflows), "tasks": len(tasks),
             "activities": {k: dict(v) for k, v in per.items()}}
    lines = ["# Provenance card", ""]
    for w in workflows:
        lines.append(f"- workflow `{w.get('workflow_id')}` {w.get('name') or ''} "
                     f"(campaign `{w.get('campaign_id')}`)")
    lines += ["", f"Tasks: {len(tasks)}", "", "| activity | tasks | finished | error | total s |",
              "|---|---|---|---|---|"]
    for name, p in sorted(per.items()):
        lines.append(f"| {name} | {p['count']} | {p['FINISHED']} | {p['ERROR']} | "
                     f"{p['total_s']:.6f} |")
    with open(output_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return stats
