"""The shapes the query service answers with, as pydantic models, so that its
OpenAPI document says what each route returns (and what its errors look like:
``{"error": message}``, the body the service sends for every 4xx and 503).

The routes return plain dicts built by :class:`flowcept.access.core.Access`;
these models describe them and are not run on the hot path (a page of 10,000
tasks is not re-validated).  ``tests/access/test_openapi.py`` validates real
answers against the document.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every refusal: 400, 401, 404, 408, 413, 422, 502, 503."""
    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="what went wrong and what to change")


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str = Field(description='"ok"')
    version: str = Field(description="flowcept version of the service")
    sources: List[str] = Field(description="names of the served sources")


class SourceInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="what source= takes")
    kind: str = Field(description="store or archive")
    location: str = Field(description="the path or URL served")


class SourceList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: List[SourceInfo]


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Optional[str] = None
    message: Optional[str] = None


class Task(BaseModel):
    """A Flowcept-style task document.  Every field is optional because a
    projection returns only the fields asked for; other fields of the payload
    may appear."""
    model_config = ConfigDict(extra="allow")
    task_id: Optional[str] = Field(None, description="<workflow hex>-<task hex>")
    workflow_id: Optional[str] = Field(None, description="16 hex digits")
    parent_task_id: Optional[str] = None
    activity_id: Optional[str] = None
    status: Optional[str] = Field(None, description="FINISHED, ERROR or RUNNING")
    started_at: Optional[float] = Field(None, description="epoch seconds")
    ended_at: Optional[float] = Field(None, description="epoch seconds")
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None
    rank: Optional[int] = None
    thread_id: Optional[int] = None
    hostname: Optional[str] = None
    used: Optional[Dict[str, Any]] = None
    generated: Optional[Any] = None
    tags: Optional[List[Any]] = None
    custom_metadata: Optional[Dict[str, Any]] = None
    error: Optional[Union[ErrorInfo, str]] = None


class TaskPage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    total: Optional[int] = Field(description="matches in all: counted when the request says count=true "
                                             "(once per filter, then remembered until the data change); "
                                             "otherwise given only when already known, else null "
                                             "(a first page does not count every match)")
    count: int = Field(description="items in this page")
    offset: int
    next_cursor: Optional[str] = Field(description="pass as cursor= for the next page; null at the end")
    items: List[Task]


class LineageAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    task_id: str
    direction: str = Field(description="ancestors or descendants")
    count: int
    items: List[Task]


class WorkflowDoc(BaseModel):
    model_config = ConfigDict(extra="allow")
    workflow_id: str


class WorkflowList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    count: int
    items: List[WorkflowDoc]


class WorkflowSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    workflow_id: Optional[str]
    workflows: Dict[str, Dict[str, Any]]
    tasks: int
    by_status: Dict[str, int]
    by_activity: Dict[str, Dict[str, int]]
    ranks: List[int]
    hosts: List[str]
    started_at: Optional[float]
    ended_at: Optional[float]
    duration_s: float


class StatsRow(BaseModel):
    """One group; the group's value is under the name given in ``by``."""
    model_config = ConfigDict(extra="forbid")
    activity: Optional[str] = None
    rank: Optional[int] = None
    hostname: Optional[str] = None
    status: Optional[str] = None
    count: int
    errors: int
    mean_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float
    total_s: float


class StatsAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    by: str
    tasks: int
    items: List[StatsRow]


class TaskQuery(BaseModel):
    """The body of POST /api/v1/tasks/query."""
    model_config = ConfigDict(extra="forbid")
    source: Optional[str] = None
    filter: Dict[str, Any] = Field(default_factory=dict)
    projection: Optional[Union[List[str], str, Dict[str, Any]]] = Field(
        None, description='"task_id,used.x", ["task_id", "used.x"] or {"task_id": 1}')
    sort: Optional[Union[str, List[Any]]] = None
    limit: Optional[int] = None
    cursor: Optional[str] = None
    count: bool = Field(False, description="also count every match (total)")


class TaskCount(BaseModel):
    """GET /api/v1/tasks/count: how many tasks match a filter."""
    model_config = ConfigDict(extra="forbid")
    source: str
    total: int = Field(description="matches in all")


class RunRow(BaseModel):
    """One workflow of a served source, with its counts and span."""
    model_config = ConfigDict(extra="allow")
    source: str
    kind: Optional[str] = None
    workflow_id: Optional[str] = None
    name: Optional[str] = None
    tasks: int
    failures: int
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    duration_s: float


class RunList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total: int
    offset: int
    count: int
    items: List[RunRow]


class Timeline(BaseModel):
    """Tasks per rank over a window: ``mode`` "tasks" (items, one per task) or
    "bins" (cells per row and time bin: busy share, dominant activity, starts, errors)."""
    model_config = ConfigDict(extra="allow")
    source: str
    t0: float
    t1: float
    tasks: int
    mode: Optional[str] = None
    activities: Optional[List[str]] = None


class FailureGroupList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    failures: int
    groups: int
    items: List[Dict[str, Any]]


class LineageGraph(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    task_id: str
    ancestors: int
    descendants: int
    nodes: List[Dict[str, Any]]
    edges: List[Any]


class AskSettingsInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool
    model: Optional[str] = None


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    export_formats: List[str]
    ask: AskSettingsInfo


class AskQuery(BaseModel):
    """The body of POST /api/v1/ask."""
    model_config = ConfigDict(extra="forbid")
    question: str = Field(..., min_length=1, max_length=2000)
    source: Optional[str] = None


class AskAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    answer: str
    calls: List[Dict[str, Any]]
    steps: int
    seconds: float
    stopped: str
    model: str


def errors(*codes: int) -> Dict[Union[int, str], Dict[str, Any]]:
    """The ``responses=`` entries of the refusals a route can send."""
    what = {400: "bad request: the message says what to change",
            401: "missing or wrong bearer token (when the service has one)",
            404: "no such source, task or workflow",
            408: "the request head or body came too slowly",
            502: "the LLM endpoint failed or could not be reached",
            413: "request body over the limit",
            422: "request parameters or body of the wrong type",
            503: "query past its time budget, or the service is busy"}
    return {c: {"model": ErrorBody, "description": what[c]} for c in codes}
