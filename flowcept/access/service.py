"""``flowcept serve``: the read-only HTTP JSON query service (FastAPI + uvicorn).

Endpoints (all GET unless said; ``source=`` picks one of several served
sources; the OpenAPI document is at ``/openapi.json``, browsable at ``/docs``):

==============================================  =============================================
/health                                         liveness and the served sources (no token)
/api/v1/sources                                 the sources served
/api/v1/tasks?filter=&projection=&sort=&limit=  one page of matching tasks + ``next_cursor``
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
/ and /ui/                                      the browser UI (flowcept.access.ui)
/metrics                                        Prometheus text (with the metrics extra)
==============================================  =============================================

Bad requests answer 400/404/413/422 with ``{"error": message}``; a query past
its time budget or a service at its concurrency bound answers 503.  Bound to
127.0.0.1 unless told otherwise; any other address needs a bearer token.
"""

import hmac
import ipaddress
import threading
from typing import Any, List, Optional, Union

from flowcept.access import core, ui
from flowcept.access.core import Access, BadRequest, NotFound
from flowcept.access.sources import QueryTimeout

MAX_BODY = 1 << 20
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(access: Access, token: Optional[str] = None, max_concurrency: int = 4,
               metrics_collector=None, ask=None):
    """The FastAPI application over ``access``.  ``token``: every request except
    /health and the UI's static pages must carry ``Authorization: Bearer <token>``.
    ``ask``: a :class:`flowcept.access.agent.AskSettings` enables POST /api/v1/ask."""
    from fastapi import Body, FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field

    from flowcept import __version__
    from flowcept.access.tools import call_tool

    app = FastAPI(title="flowcept query service", version=__version__,
                  description="Read-only access to captured workflow provenance: tasks (Mongo-style "
                              "filters), workflows, lineage, statistics, PROV.")
    gate = threading.BoundedSemaphore(max_concurrency)

    def err(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token and request.url.path not in ("/health",) and not ui.is_public(request.url.path):
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"error": "missing or wrong bearer token (Authorization: Bearer ...)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > MAX_BODY):
            return err(413, f"request body over {MAX_BODY} bytes")
        return await call_next(request)

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

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r, e):
        return err(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _422(_r, e):
        msgs = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', ()))}: {d.get('msg')}" for d in e.errors())
        return err(422, msgs or "invalid request")

    def run(fn, *a, **kw):
        if not gate.acquire(timeout=access.query_timeout):
            raise QueryTimeout("the service is busy with other queries; retry shortly")
        try:
            return fn(*a, **kw)
        finally:
            gate.release()

    FilterQ = Query(None, description='Mongo-style filter as JSON, e.g. {"activity_id": "train"}')
    ProjQ = Query(None, description="fields to return, comma-separated (dotted paths allowed)")
    SortQ = Query(None, description="fields to sort by, comma-separated, - for descending")
    SourceQ = Query(None, description="source name (see /api/v1/sources); optional when one is served")

    class TaskQuery(BaseModel):
        model_config = ConfigDict(extra="forbid")
        source: Optional[str] = None
        filter: dict = Field(default_factory=dict)
        projection: Optional[Union[List[str], str, dict]] = None
        sort: Optional[Union[str, List[Any]]] = None
        limit: Optional[int] = None
        cursor: Optional[str] = None

    @app.get("/health")
    def health():
        return {"status": "ok", "version": __version__, "sources": [s["name"] for s in access.list_sources()]}

    @app.get("/api/v1/sources")
    def sources():
        return {"items": access.list_sources()}

    @app.get("/api/v1/tasks")
    def tasks(filter: Optional[str] = FilterQ, projection: Optional[str] = ProjQ,
              sort: Optional[str] = SortQ, limit: Optional[int] = Query(None, description="page size"),
              cursor: Optional[str] = None, source: Optional[str] = SourceQ):
        return run(access.tasks, source, filter, projection, sort, limit, cursor)

    @app.post("/api/v1/tasks/query")
    def tasks_query(q: TaskQuery = Body(...)):
        return run(access.tasks, q.source, q.filter, q.projection, q.sort, q.limit, q.cursor)

    @app.get("/api/v1/tasks/export", response_class=StreamingResponse,
             responses={200: {"content": {m: {} for m in core.EXPORT_FORMATS.values()}}})
    def tasks_export(format: str = Query("csv", description="csv, jsonl or parquet (needs pyarrow)"),
                     filter: Optional[str] = FilterQ, projection: Optional[str] = ProjQ,
                     sort: Optional[str] = SortQ, limit: Optional[int] = None,
                     source: Optional[str] = SourceQ):
        # like /tasks/stream: checked and begun inside the request (errors are 4xx/503), then
        # streamed under the query's budget, holding a concurrency slot until the end
        if not gate.acquire(timeout=access.query_timeout):
            raise QueryTimeout("the service is busy with other queries; retry shortly")
        try:
            media, name, chunks = core.export_tasks(access, source, filter, projection, sort, limit, format)
            first = next(chunks, b"")
        except BaseException:
            gate.release()
            raise

        def body():
            try:
                yield first
                yield from chunks
            finally:
                chunks.close()
                gate.release()
        return StreamingResponse(body(), media_type=media,
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/v1/tasks/stream", response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}}}})
    def tasks_stream(filter: Optional[str] = FilterQ, projection: Optional[str] = ProjQ,
                     sort: Optional[str] = SortQ, limit: Optional[int] = None,
                     source: Optional[str] = SourceQ):
        # checked, and its first block found, before the answer starts (errors are 4xx/503);
        # then streamed block by block under the query's budget and a concurrency slot
        from flowcept.query.documents import dumps, dumps_lines
        if not gate.acquire(timeout=access.query_timeout):
            raise QueryTimeout("the service is busy with other queries; retry shortly")
        try:
            parts = access.iter_pages(source, filter, projection, sort, limit)
            first = next(parts, None)
        except BaseException:
            gate.release()
            raise

        def lines():
            try:
                if first:
                    yield dumps_lines(first)
                for part in parts:
                    yield dumps_lines(part)
            except QueryTimeout as e:   # the answer has begun: its last line says why it stops
                yield dumps({"error": str(e)}) + b"\n"
            finally:
                parts.close()
                gate.release()
        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/api/v1/tasks/{task_id}")
    def task(task_id: str, source: Optional[str] = SourceQ):
        return run(access.task, task_id, source)

    @app.get("/api/v1/tasks/{task_id}/graph")
    def task_graph(task_id: str, source: Optional[str] = SourceQ,
                   max_nodes: Optional[int] = Query(None, description="ancestors and descendants each (1-200)")):
        return run(core.lineage_graph, access, task_id, source, max_nodes)

    @app.get("/api/v1/tasks/{task_id}/ancestors")
    def ancestors(task_id: str, source: Optional[str] = SourceQ, projection: Optional[str] = ProjQ):
        return run(access.lineage, task_id, "ancestors", source, projection)

    @app.get("/api/v1/tasks/{task_id}/descendants")
    def descendants(task_id: str, source: Optional[str] = SourceQ, projection: Optional[str] = ProjQ):
        return run(access.lineage, task_id, "descendants", source, projection)

    @app.get("/api/v1/workflows")
    def workflows(source: Optional[str] = SourceQ):
        return run(access.workflows, source)

    @app.get("/api/v1/workflows/summary")
    def workflow_summary(workflow_id: Optional[str] = None, source: Optional[str] = SourceQ):
        return run(access.workflow_summary, workflow_id, source)

    @app.get("/api/v1/stats")
    def stats(by: str = Query("activity", description="activity, rank, hostname or status"),
              filter: Optional[str] = FilterQ, source: Optional[str] = SourceQ):
        return run(access.stats, by, source, filter)

    @app.get("/api/v1/failures")
    def failures(filter: Optional[str] = FilterQ, limit: Optional[int] = None,
                 projection: Optional[str] = ProjQ, source: Optional[str] = SourceQ):
        return run(access.failures, source, filter, limit, projection)

    @app.get("/api/v1/prov", response_class=Response)
    def prov(format: str = Query("json", description="json, provn, xml or rdf (Turtle)"),
             workflow_id: Optional[str] = None, source: Optional[str] = SourceQ):
        media, text = run(access.prov, source, workflow_id, format)
        return Response(text, media_type=media)

    @app.get("/api/v1/runs")
    def runs(q: Optional[str] = Query(None, description="keep runs whose name, campaign, user, job, "
                                                        "source or workflow id contains this"),
             sort: Optional[str] = Query(None, description="e.g. -started_at, tasks, -failures"),
             limit: Optional[int] = None, offset: Optional[int] = None):
        return run(core.runs, access, q, sort, limit, offset)

    @app.get("/api/v1/timeline")
    def timeline(filter: Optional[str] = FilterQ, source: Optional[str] = SourceQ,
                 t0: Optional[float] = Query(None, description="window start, epoch seconds"),
                 t1: Optional[float] = Query(None, description="window end, epoch seconds"),
                 bins: int = Query(800, description="time bins (the pixels across the picture)"),
                 max_rows: int = Query(64, description="rows at most; ranks are grouped past it"),
                 max_tasks: Optional[int] = Query(None, description="tasks sent one by one at most "
                                                                     "(default: bins)")):
        return run(core.timeline, access, source, filter, t0, t1, bins, max_rows, max_tasks)

    @app.get("/api/v1/failures/groups")
    def failure_groups(filter: Optional[str] = FilterQ, limit: Optional[int] = None,
                       source: Optional[str] = SourceQ):
        return run(core.failure_groups, access, source, filter, limit)

    @app.get("/api/v1/capabilities")
    def capabilities():
        return {"version": __version__, "export_formats": core.export_formats(),
                "ask": {"enabled": ask is not None, "model": ask.model if ask is not None else None}}

    asking = threading.BoundedSemaphore(1)

    class AskQuery(BaseModel):
        model_config = ConfigDict(extra="forbid")
        question: str = Field(..., min_length=1, max_length=2000)
        source: Optional[str] = None

    @app.post("/api/v1/ask")
    def ask_question(q: AskQuery = Body(...)):
        from flowcept.access.agent import AgentError, answer
        if ask is None:
            return err(404, "no LLM endpoint is configured: start flowcept serve with --ask-base-url URL "
                            "--ask-model NAME")
        if not asking.acquire(blocking=False):
            return err(503, "another question is being answered; retry when it is done")
        try:
            return answer(ask, q.question, lambda name, a: run(call_tool, access, name, a), q.source)
        except AgentError as e:
            return err(502, str(e))
        finally:
            asking.release()

    ui.mount(app)

    if metrics_collector is not None:
        @app.get("/metrics", response_class=PlainTextResponse)
        def metrics():
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
            return Response(generate_latest(metrics_collector.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(access: Access, host: str = "127.0.0.1", port: int = 8008, token: Optional[str] = None,
          max_concurrency: int = 4, metrics_collector=None, ready=None, ask=None) -> None:
    """Runs the service until SIGINT/SIGTERM.  Refuses a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(f"binding {host} exposes the service beyond this machine: pass --token-file "
                         "FILE (a bearer token every client must send), or bind 127.0.0.1")
    try:
        import uvicorn
    except ImportError:
        raise ImportError("flowcept serve needs FastAPI and uvicorn: pip install 'flowcept[serve]'") from None
    app = create_app(access, token=token, max_concurrency=max_concurrency,
                     metrics_collector=metrics_collector, ask=ask)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=5,
                            limit_concurrency=64, access_log=False)
    server = uvicorn.Server(config)
    if ready is not None:
        ready(server)
    server.run()
