"""``flowcept serve``: the read-only HTTP JSON query service (FastAPI + uvicorn).

Endpoints (all GET unless said; ``source=`` picks one of several served
sources; the OpenAPI document is at ``/openapi.json``, browsable offline at
``/docs`` (Swagger UI) and ``/redoc``, their assets served from the
fastapi-offline package):

==============================================  =============================================
/health                                         liveness and the served sources (no token)
/api/v1/sources                                 the sources served
/api/v1/tasks?filter=&projection=&sort=&limit=  one page of matching tasks + ``next_cursor``
                                                (``count=true``: also ``total``, every match counted)
/api/v1/tasks/count?filter=                     how many tasks match
  &cursor=
POST /api/v1/tasks/query                        the same, the request as a JSON body
/api/v1/tasks/stream?...                        every match as JSON lines (streamed)
/api/v1/tasks/{task_id}                         one task
/api/v1/tasks/{task_id}/ancestors|descendants   lineage
/api/v1/workflows                               workflow documents
/api/v1/workflows/summary?workflow_id=          tasks by status and activity, ranks, span
/api/v1/stats?by=activity|rank|hostname|status  durations and error counts per group
/api/v1/failures                                tasks with status ERROR
/api/v1/prov?format=json|provn|xml|rdf          W3C PROV document
/api/v1/runs?q=&sort=&limit=&offset=            every workflow served, with counts and span
/api/v1/timeline?filter=&t0=&t1=&bins=          tasks per rank over time (binned past ``bins``)
/api/v1/failures/groups?filter=                 failures grouped by error type
/api/v1/tasks/{task_id}/graph                   nearest lineage as nodes and edges
/api/v1/tasks/export?format=csv|jsonl|parquet   every match as a file download
/api/v1/capabilities                            what this server offers (ask, export formats)
POST /api/v1/ask                                a question to the LLM agent (when configured)
/ and /ui/                                      the browser UI (flowcept.access.ui; no token)
/metrics                                        Prometheus text (with the metrics extra)
==============================================  =============================================

Every refusal is ``{"error": message}``: 400 (bad request), 401 (token),
404, 408 (request head or body too slow), 413 (body over 1 MiB, chunked
bodies included: refused as soon as they pass the limit), 422 (wrong types),
503 (a query past its time budget, or the service at its bound).

What one client cannot do to the others (:class:`ServiceLimits`):

* hold a connection open by sending its request head slowly: the head must
  arrive within ``head_timeout_s`` of its first byte (408, connection closed);
  such connections never count as requests in flight, and when the server is
  at ``max_connections`` the connection waiting longest for its head is the
  one closed;
* send a body slowly or without end: ``body_timeout_s`` and ``max_body``;
* fill the request slots: the token is checked as soon as the head is in,
  before anything is read or queued; at most ``max_requests`` requests are
  in flight (then 503 at once), and at most ``max_concurrency`` queries run
  while the others wait without holding a thread (503 after ``queue_timeout_s``);
  each query then runs under its own budget (``--query-timeout``).

Bound to 127.0.0.1 unless told otherwise; any other address needs a bearer token.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Optional

from flowcept.access import core, ui
from flowcept.access.api_models import (AskAnswer, AskQuery, Capabilities, ErrorBody, FailureGroupList,
                                        Health, LineageAnswer, LineageGraph, RunList, SourceList,
                                        StatsAnswer, TaskCount, TaskPage, TaskQuery, Task, Timeline,
                                        WorkflowList, WorkflowSummary, errors)
from flowcept.access.core import Access, BadRequest, NotFound
from flowcept.access.sources import QueryTimeout

MAX_BODY = 1 << 20
LOOPBACK = ("127.0.0.1", "localhost", "::1")
OPEN_PATHS = ("/health",)
API_ERRORS = (400, 401, 404, 408, 413, 422, 503)


@dataclass(frozen=True)
class ServiceLimits:
    """How much of the service one client can hold (see the module docstring)."""
    max_concurrency: int = 4        # queries running at once
    queue_timeout_s: float = 60.0   # how long a query waits for a free slot, then 503
    max_requests: int = 512         # requests in flight (head read), then 503
    max_connections: int = 2048     # open connections; the slowest head is closed past it
    head_timeout_s: float = 10.0    # from a request's first byte to its last header
    body_timeout_s: float = 10.0    # to read a request body (at most max_body)
    keep_alive_s: float = 5.0       # an idle kept-alive connection is closed after this
    max_body: int = MAX_BODY


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _refuse(send, status: int, message: str, extra_headers=()) -> None:
    """Answers ``{"error": message}`` and asks the server to close the
    connection (whatever the client still sends is not read)."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra_headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The outermost ASGI layer: token, requests in flight, request bodies.

    It runs as soon as a request head is parsed, before routing, and reads a
    body itself (chunked or not) so that one over ``max_body`` is refused at
    the limit, without reading the rest."""

    def __init__(self, app, token: Optional[str], limits: ServiceLimits):
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.limits = limits
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if (self.expected is not None and scope["path"] not in OPEN_PATHS
                and not ui.is_public(scope["path"])):
            got = headers.get(b"authorization", b"")
            if not hmac.compare_digest(got, self.expected):
                return await _refuse(send, 401, "missing or wrong bearer token (Authorization: Bearer ...)",
                                     [(b"www-authenticate", b"Bearer")])
        if self.in_flight >= self.limits.max_requests:
            return await _refuse(send, 503, f"the service has {self.in_flight} requests in flight; "
                                            "retry shortly")
        self.in_flight += 1
        try:
            length = headers.get(b"content-length")
            chunked = b"transfer-encoding" in headers
            if length is not None and (not length.isdigit() or int(length) > self.limits.max_body):
                return await _refuse(send, 413, f"request body over {self.limits.max_body} bytes")
            if chunked or (length is not None and int(length) > 0):
                body = await self._read_body(receive, send)
                if body is None:
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _read_body(self, receive, send) -> Optional[bytes]:
        """The whole body, or None after answering 413/408 (or a disconnect)."""
        parts, size = [], 0
        deadline = time.monotonic() + self.limits.body_timeout_s
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await _refuse(send, 408, f"request body not received within {self.limits.body_timeout_s:g} s")
                return None
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body:
                await _refuse(send, 413, f"request body over {self.limits.max_body} bytes")
                return None
            parts.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive):
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()   # then whatever comes: a disconnect
    return again


def guarded_protocol(limits: ServiceLimits):
    """uvicorn's h11 protocol with a deadline on each request head and a cap on
    open connections that evicts the connection waiting longest for its head."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutProtocol(H11Protocol):
        _head_timer = None
        _head_since = 0.0

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()
            if len(self.connections) > limits.max_connections:
                waiting = [c for c in self.connections
                           if getattr(c, "_head_timer", None) is not None and c is not self]
                victim = min(waiting, key=lambda c: c._head_since) if waiting else self
                victim._close_slow("the server is at its connection limit and this request head "
                                   "is the slowest")

        def data_received(self, data: bytes) -> None:
            if self._head_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._head_since = time.monotonic()
            self._head_timer = self.loop.call_later(limits.head_timeout_s, self._close_slow,
                                                    f"request head not received within "
                                                    f"{limits.head_timeout_s:g} s")

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _close_slow(self, why: str) -> None:
            self._disarm()
            if self.transport.is_closing():
                return
            body = json.dumps({"error": why}).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            self.transport.close()

    return HeadTimeoutProtocol


def create_app(access: Access, token: Optional[str] = None, max_concurrency: int = 4,
               metrics_collector=None, limits: Optional[ServiceLimits] = None, ask=None):
    """The ASGI application over ``access`` (FastAPI inside :class:`Guard`).
    ``token``: every request except /health and the UI's static pages must carry
    ``Authorization: Bearer <token>``.  ``ask``: a
    :class:`flowcept.access.agent.AskSettings` enables POST /api/v1/ask."""
    from fastapi import Body, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from fastapi_offline import FastAPIOffline
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from flowcept import __version__
    from flowcept.access.tools import call_tool

    limits = limits or ServiceLimits(max_concurrency=max_concurrency)
    app = FastAPIOffline(title="flowcept query service", version=__version__,
                         static_url="/docs-assets",
                         description="Read-only access to captured workflow provenance: tasks (Mongo-style "
                                     "filters), workflows, lineage, statistics, PROV.  Every refusal is "
                                     '`{"error": message}`.')
    slots = {}

    def err(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(BadRequest)
    async def _bad(_r, e):
        return err(400, str(e))

    @app.exception_handler(NotFound)
    async def _nf(_r, e):
        return err(404, str(e))

    @app.exception_handler(QueryTimeout)
    async def _to(_r, e):
        return err(503, str(e))

    @app.exception_handler(ValueError)
    async def _val(_r, e):
        return err(400, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r, e):
        return err(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _422(_r, e):
        msgs = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', ()))}: {d.get('msg')}" for d in e.errors())
        return err(422, msgs or "invalid request")

    @app.exception_handler(Exception)
    async def _500(_r, e):   # a bug: still the service's shape, never a traceback
        return err(500, f"internal error ({type(e).__name__}); the service goes on")

    async def slot():
        """One of max_concurrency query slots; waiting holds no thread, and ends
        in 503 after queue_timeout_s.  Returns the semaphore to release."""
        sem = slots.get("sem")
        if sem is None:   # made in the server's loop
            sem = slots["sem"] = asyncio.Semaphore(limits.max_concurrency)
        try:
            await asyncio.wait_for(sem.acquire(), limits.queue_timeout_s)
        except asyncio.TimeoutError:
            raise QueryTimeout("the service is busy with other queries; retry shortly") from None
        return sem

    async def run(fn, *a):
        """Runs a query in a worker thread once a slot is free."""
        sem = await slot()
        try:
            return await run_in_threadpool(fn, *a)
        finally:
            sem.release()

    async def streamed(begin, encode, media: str, headers=None):
        """A streamed answer holding a slot to its end: ``begin()`` (in a thread)
        checks the request and returns (parts iterator, first part), so that its
        errors are still 4xx/503; then each part is read in a thread, encoded and
        sent.  A query past its budget mid-answer ends with an error line."""
        sem = await slot()
        try:
            parts, first = await run_in_threadpool(begin)
        except BaseException:
            sem.release()
            raise

        async def body():
            try:
                part = first
                while part is not None:
                    yield encode(part)
                    part = await run_in_threadpool(next, parts, None)
            except QueryTimeout as e:   # the answer has begun: its last line says why it stops
                yield json.dumps({"error": str(e)}).encode() + b"\n"
            finally:
                await run_in_threadpool(parts.close)
                sem.release()
        return StreamingResponse(body(), media_type=media, headers=headers)

    FilterQ = Query(None, description='Mongo-style filter as JSON, e.g. {"activity_id": "train"}')
    ProjQ = Query(None, description="fields to return, comma-separated (dotted paths allowed)")
    SortQ = Query(None, description="fields to sort by, comma-separated, - for descending")
    SourceQ = Query(None, description="source name (see /api/v1/sources); optional when one is served")
    LimitQ = Query(None, description="page size (1 to the service's --max-limit)")

    def ok(model, *codes):
        return {200: {"model": model}, **errors(*codes)}

    common = API_ERRORS

    @app.get("/health", response_model=Health, responses=errors(408, 503))
    async def health():
        return {"status": "ok", "version": __version__, "sources": [s["name"] for s in access.list_sources()]}

    @app.get("/api/v1/sources", response_model=None, responses=ok(SourceList, 401, 408, 503))
    async def sources():
        return {"items": access.list_sources()}

    CountQ = Query(False, description="also count every match (total); otherwise total is given only "
                                      "when already known (null on a first page of a new filter)")

    def page_body(body: bytes):   # written by Access.tasks_json: the bytes JSONResponse would send
        return Response(body, media_type="application/json")

    @app.get("/api/v1/tasks", response_model=None, responses=ok(TaskPage, *common))
    async def tasks(filter: Optional[str] = FilterQ, projection: Optional[str] = ProjQ,
                    sort: Optional[str] = SortQ, limit: Optional[int] = LimitQ,
                    cursor: Optional[str] = Query(None, description="next_cursor of the previous page"),
                    source: Optional[str] = SourceQ, count: bool = CountQ):
        return page_body(await run(access.tasks_json, source, filter, projection, sort, limit, cursor, count))

    @app.post("/api/v1/tasks/query", response_model=None, responses=ok(TaskPage, *common))
    async def tasks_query(q: TaskQuery = Body(...)):
        return page_body(await run(access.tasks_json, q.source, q.filter, q.projection, q.sort, q.limit,
                                   q.cursor, q.count))

    @app.get("/api/v1/tasks/count", response_model=None, responses=ok(TaskCount, *common))
    async def tasks_count(filter: Optional[str] = FilterQ, source: Optional[str] = SourceQ):
        return await run(access.count, source, filter)

    @app.get("/api/v1/tasks/stream", response_class=StreamingResponse,
             responses={200: {"description": "one task document (as in items) per line",
                              "content": {"application/x-ndjson": {"schema": {
                                  "type": "string", "contentMediaType": "application/x-ndjson"}}}},
                        **errors(*common)})
    async def tasks_stream(filter: Optional[str] = FilterQ, projection: Optional[str] = ProjQ,
                           sort: Optional[str] = SortQ, limit: Optional[int] = LimitQ,
                           source: Optional[str] = SourceQ):
        def begin():
            parts = access.iter_json(source, filter, projection, sort, limit)
            return parts, next(parts, None)
        return await streamed(begin, lambda b: b, "application/x-ndjson")

    export_content = {m: {"schema": {"type": "string", "contentMediaType": m}}
                      for m in core.EXPORT_FORMATS.values()}

    @app.get("/api/v1/tasks/export", response_class=StreamingResponse,
             responses={200: {"description": "every match as a file (Content-Disposition: attachment)",
                              "content": export_content}, **errors(*common)})
    async def tasks_export(format: str = Query("csv", description="csv, jsonl or parquet (needs pyarrow)"),
                           filter: Optional[str] = FilterQ, projection: Optional[str] = ProjQ,
                           sort: Optional[str] = SortQ, limit: Optional[int] = LimitQ,
                           source: Optional[str] = SourceQ):
        info = {}

        def begin():
            media, name, chunks = core.export_tasks(access, source, filter, projection, sort, limit, format)
            info.update(media=media, name=name)
            return chunks, next(chunks, b"")
        resp = await streamed(begin, lambda b: b, "application/octet-stream")
        resp.media_type = info["media"]
        resp.headers["content-type"] = info["media"]
        resp.headers["content-disposition"] = f'attachment; filename="{info["name"]}"'
        return resp

    @app.get("/api/v1/tasks/{task_id}", response_model=None, responses=ok(Task, *common))
    async def task(task_id: str, source: Optional[str] = SourceQ):
        return await run(access.task, task_id, source)

    @app.get("/api/v1/tasks/{task_id}/graph", response_model=None, responses=ok(LineageGraph, *common))
    async def task_graph(task_id: str, source: Optional[str] = SourceQ,
                         max_nodes: Optional[int] = Query(None, description="ancestors and descendants each "
                                                                             "(1-200)")):
        return await run(core.lineage_graph, access, task_id, source, max_nodes)

    @app.get("/api/v1/tasks/{task_id}/ancestors", response_model=None, responses=ok(LineageAnswer, *common))
    async def ancestors(task_id: str, source: Optional[str] = SourceQ, projection: Optional[str] = ProjQ):
        return await run(access.lineage, task_id, "ancestors", source, projection)

    @app.get("/api/v1/tasks/{task_id}/descendants", response_model=None,
             responses=ok(LineageAnswer, *common))
    async def descendants(task_id: str, source: Optional[str] = SourceQ, projection: Optional[str] = ProjQ):
        return await run(access.lineage, task_id, "descendants", source, projection)

    @app.get("/api/v1/workflows", response_model=None, responses=ok(WorkflowList, *common))
    async def workflows(source: Optional[str] = SourceQ):
        return await run(access.workflows, source)

    @app.get("/api/v1/workflows/summary", response_model=None, responses=ok(WorkflowSummary, *common))
    async def workflow_summary(workflow_id: Optional[str] = Query(None, description="16 hex digits"),
                               source: Optional[str] = SourceQ):
        return await run(access.workflow_summary, workflow_id, source)

    @app.get("/api/v1/stats", response_model=None, responses=ok(StatsAnswer, *common))
    async def stats(by: str = Query("activity", description="activity, rank, hostname or status"),
                    filter: Optional[str] = FilterQ, source: Optional[str] = SourceQ):
        return await run(access.stats, by, source, filter)

    @app.get("/api/v1/failures", response_model=None, responses=ok(TaskPage, *common))
    async def failures(filter: Optional[str] = FilterQ, limit: Optional[int] = LimitQ,
                       projection: Optional[str] = ProjQ, source: Optional[str] = SourceQ):
        return await run(access.failures, source, filter, limit, projection)

    prov_content = {"application/json": {"schema": {"type": "object", "description": "PROV-JSON"}},
                    "text/provenance-notation": {"schema": {"type": "string"}},
                    "application/xml": {"schema": {"type": "string"}},
                    "text/turtle": {"schema": {"type": "string"}}}

    @app.get("/api/v1/prov", response_class=Response,
             responses={200: {"description": "a W3C PROV document in the format asked for",
                              "content": prov_content}, **errors(*common)})
    async def prov(format: str = Query("json", description="json, provn, xml or rdf (Turtle)"),
                   workflow_id: Optional[str] = Query(None, description="16 hex digits; omit for all"),
                   source: Optional[str] = SourceQ):
        media, text = await run(access.prov, source, workflow_id, format)
        return Response(text, media_type=media)

    @app.get("/api/v1/runs", response_model=None, responses=ok(RunList, *common))
    async def runs(q: Optional[str] = Query(None, description="keep runs whose name, campaign, user, job, "
                                                              "source or workflow id contains this"),
                   sort: Optional[str] = Query(None, description="e.g. -started_at, tasks, -failures"),
                   limit: Optional[int] = LimitQ, offset: Optional[int] = None):
        return await run(core.runs, access, q, sort, limit, offset)

    @app.get("/api/v1/timeline", response_model=None, responses=ok(Timeline, *common))
    async def timeline(filter: Optional[str] = FilterQ, source: Optional[str] = SourceQ,
                       t0: Optional[float] = Query(None, description="window start, epoch seconds"),
                       t1: Optional[float] = Query(None, description="window end, epoch seconds"),
                       bins: int = Query(800, description="time bins (the pixels across the picture)"),
                       max_rows: int = Query(64, description="rows at most; ranks are grouped past it"),
                       max_tasks: Optional[int] = Query(None, description="tasks sent one by one at most "
                                                                           "(default: bins)")):
        return await run(core.timeline, access, source, filter, t0, t1, bins, max_rows, max_tasks)

    @app.get("/api/v1/failures/groups", response_model=None, responses=ok(FailureGroupList, *common))
    async def failure_groups(filter: Optional[str] = FilterQ, limit: Optional[int] = LimitQ,
                             source: Optional[str] = SourceQ):
        return await run(core.failure_groups, access, source, filter, limit)

    @app.get("/api/v1/capabilities", response_model=None, responses=ok(Capabilities, 401, 408, 503))
    async def capabilities():
        return {"version": __version__, "export_formats": core.export_formats(),
                "ask": {"enabled": ask is not None, "model": ask.model if ask is not None else None}}

    asking = asyncio.Lock()

    @app.post("/api/v1/ask", response_model=None, responses=ok(AskAnswer, *common, 502))
    async def ask_question(q: AskQuery = Body(...)):
        from flowcept.access.agent import AgentError, answer
        if ask is None:
            return err(404, "no LLM endpoint is configured: start flowcept serve with --ask-base-url URL "
                            "--ask-model NAME")
        if asking.locked():
            return err(503, "another question is being answered; retry when it is done")
        async with asking:
            loop = asyncio.get_running_loop()

            def tool(name, a):   # each tool call of the agent takes a query slot like any query
                return asyncio.run_coroutine_threadsafe(run(call_tool, access, name, a), loop).result()
            try:
                return await run_in_threadpool(answer, ask, q.question, tool, q.source)
            except AgentError as e:
                return err(502, str(e))

    ui.mount(app)

    if metrics_collector is not None:
        @app.get("/metrics", response_class=Response,
                 responses={200: {"description": "Prometheus text exposition format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                            **errors(401, 408, 503)})
        async def metrics():
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
            text = await run_in_threadpool(generate_latest, metrics_collector.registry)
            return Response(text, media_type=CONTENT_TYPE_LATEST)

    def openapi():
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
            if token:
                doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                doc["security"] = [{"bearer": []}]
                for path in OPEN_PATHS:
                    for op in doc["paths"].get(path, {}).values():
                        op["security"] = []
            app.openapi_schema = doc
        return app.openapi_schema
    app.openapi = openapi

    return Guard(app, token, limits)


def check_bind(host: str, token: Optional[str]) -> None:
    """A non-loopback address without a token is refused (one line naming the fix)."""
    if not is_loopback(host) and not token:
        raise ValueError(f"binding {host} exposes the service beyond this machine: pass --token-file "
                         "FILE (a bearer token every client must send), or bind 127.0.0.1")


def serve(access: Access, host: str = "127.0.0.1", port: int = 8008, token: Optional[str] = None,
          max_concurrency: int = 4, metrics_collector=None, ready=None,
          limits: Optional[ServiceLimits] = None, ask=None) -> None:
    """Runs the service until SIGINT/SIGTERM.  Refuses a non-loopback address without a token."""
    check_bind(host, token)
    try:
        import uvicorn
        import fastapi_offline  # noqa: F401
    except ImportError as e:
        raise ImportError(f"flowcept serve needs FastAPI, uvicorn and fastapi-offline ({e.name} is "
                          "missing): pip install 'flowcept[serve]'") from None
    limits = limits or ServiceLimits(max_concurrency=max_concurrency)
    app = create_app(access, token=token, metrics_collector=metrics_collector, limits=limits, ask=ask)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_keep_alive=limits.keep_alive_s, limit_concurrency=None,
                            http=guarded_protocol(limits), access_log=False,
                            h11_max_incomplete_event_size=64 * 1024)
    server = uvicorn.Server(config)
    if ready is not None:
        ready(server)
    server.run()
