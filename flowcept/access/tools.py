"""The read-only tools that the MCP server and the agent expose: one table of
name, description, JSON schema and the call into :class:`flowcept.access.core.Access`.

Answers are JSON text capped at ``MAX_TOOL_CHARS`` (a model's context is the
limit here, not the service's): a longer answer keeps its counts and as many
items as fit, and says it was cut.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List

MAX_TOOL_CHARS = 12_000
TOOL_LIMIT = 50

_FILTER = {"type": "object", "description": "Mongo-style filter on task fields: task_id, workflow_id, "
           "activity_id, status (FINISHED/ERROR/RUNNING), rank, hostname, thread_id, started_at, "
           "ended_at (epoch seconds), parent_task_id, tags, used.<name>, generated.<name>; operators "
           "$eq $ne $gt $gte $lt $lte $in $nin $exists $regex, $and/$or/$nor. {} matches every task."}
_SOURCE = {"type": "string", "description": "source name (only when several are served)"}
_TASK = {"type": "string", "description": "task id, as in task_id (<workflow hex>-<task hex>)"}


def _cut(doc: dict) -> str:
    text = json.dumps(doc, default=str)
    if len(text) <= MAX_TOOL_CHARS or not isinstance(doc.get("items"), list):
        return text[:MAX_TOOL_CHARS]
    items = list(doc["items"])
    while items and len(text) > MAX_TOOL_CHARS:
        items = items[:max(0, len(items) // 2)]
        text = json.dumps({**doc, "items": items, "truncated": True,
                           "note": "answer cut to fit; ask with a narrower filter or a projection"},
                          default=str)
    return text


TOOLS: List[Dict[str, Any]] = [
    {"name": "find_tasks",
     "description": "Find task records matching a filter; returns total, items (at most limit) and "
                    "next_cursor.",
     "parameters": {"type": "object", "properties": {
         "filter": _FILTER,
         "projection": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                        "description": "fields to return, comma-separated as in HTTP and the CLI "
                                       "(\"task_id,activity_id,used\") or a list of names"},
         "sort": {"type": "string", "description": "e.g. \"-ended_at\" (- for descending)"},
         "limit": {"type": "integer", "description": f"at most this many items (1-{TOOL_LIMIT * 4})"},
         "cursor": {"type": "string", "description": "next_cursor of the previous answer, for the next "
                                                     "page of the same question"},
         "source": _SOURCE}},
     "call": lambda a, filter=None, projection=None, sort=None, limit=None, cursor=None, source=None:
         a.tasks(source, filter or {}, projection, sort, min(int(limit or TOOL_LIMIT), TOOL_LIMIT * 4),
                 cursor, count=True)},
    {"name": "get_task",
     "description": "One task record by its task id (used, generated, status, timing, rank, host).",
     "parameters": {"type": "object", "properties": {"task_id": _TASK, "source": _SOURCE},
                    "required": ["task_id"]},
     "call": lambda a, task_id, source=None: a.task(task_id, source)},
    {"name": "workflow_summary",
     "description": "Summary of a workflow (or of everything): task counts by status and by "
                    "activity, ranks, hosts, start, end and duration, workflow documents.",
     "parameters": {"type": "object", "properties": {
         "workflow_id": {"type": "string", "description": "16 hex digits; omit for all"},
         "source": _SOURCE}},
     "call": lambda a, workflow_id=None, source=None: a.workflow_summary(workflow_id, source)},
    {"name": "lineage",
     "description": "Tasks a task depends on (ancestors: parents and producers of what it used) or "
                    "that depend on it (descendants).",
     "parameters": {"type": "object", "properties": {
         "task_id": _TASK,
         "direction": {"type": "string", "enum": ["ancestors", "descendants"]},
         "source": _SOURCE}, "required": ["task_id"]},
     "call": lambda a, task_id, direction="ancestors", source=None:
         a.lineage(task_id, direction, source, ["task_id", "activity_id", "status", "rank"])},
    {"name": "statistics",
     "description": "Duration statistics (count, errors, mean, p50, p95, max, total seconds) "
                    "grouped by activity, rank, hostname or status, over tasks matching a filter.",
     "parameters": {"type": "object", "properties": {
         "by": {"type": "string", "enum": ["activity", "rank", "hostname", "status"]},
         "filter": _FILTER, "source": _SOURCE}},
     "call": lambda a, by="activity", filter=None, source=None: a.stats(by, source, filter or {})},
    {"name": "failures",
     "description": "Tasks that failed (status ERROR), optionally narrowed by a filter (e.g. "
                    "{\"rank\": 3}); items include the error and what they used.",
     "parameters": {"type": "object", "properties": {
         "filter": _FILTER, "limit": {"type": "integer"}, "source": _SOURCE}},
     "call": lambda a, filter=None, limit=None, source=None:
         a.failures(source, filter or {}, min(int(limit or TOOL_LIMIT), TOOL_LIMIT * 4))},
]

BY_NAME: Dict[str, Dict[str, Any]] = {t["name"]: t for t in TOOLS}


def call_tool(access, name: str, args: Dict[str, Any]) -> str:
    """Runs one tool; errors come back as {"error": ...} text (a model can read and retry)."""
    from flowcept.access.core import BadRequest, NotFound
    from flowcept.access.sources import QueryTimeout
    tool = BY_NAME.get(name)
    if tool is None:
        return json.dumps({"error": f"no tool {name!r}; tools: {', '.join(BY_NAME)}"})
    if not isinstance(args, dict):
        return json.dumps({"error": "tool arguments must be a JSON object"})
    props = tool["parameters"]["properties"]
    unknown = [k for k in args if k not in props]
    if unknown:
        return json.dumps({"error": f"unknown argument(s) {', '.join(unknown)} for {name}; "
                                    f"takes {', '.join(props)}"})
    missing = [k for k in tool["parameters"].get("required", []) if args.get(k) in (None, "")]
    if missing:
        return json.dumps({"error": f"{name} needs {', '.join(missing)}"})
    try:
        return _cut(tool["call"](access, **{k: v for k, v in args.items() if v is not None}))
    except (BadRequest, NotFound, QueryTimeout, ValueError, TypeError, KeyError) as e:
        return json.dumps({"error": str(e)})
    except Exception as e:   # the model reads an error, never a dropped call
        return json.dumps({"error": f"internal error ({type(e).__name__}: {e}); try another question"})


def openai_tools() -> List[dict]:
    """The tool list in the OpenAI chat-completions format."""
    return [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": t["parameters"]}} for t in TOOLS]


Caller = Callable[[str, Dict[str, Any]], str]
