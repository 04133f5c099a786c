"""MCP agents: tool calls become task records with the agent as PROV agent.

Two places to capture, use either or both:

* server side, ``@agent_flowcept_task`` (Flowcept's name) on a tool
  function, under the server's own decorator::

      @server.tool()
      @agent_flowcept_task(agent_id="planner")
      def add(a: int, b: int) -> int: ...

  one record per call: activity = the tool name, ``used`` = its arguments,
  ``generated`` = a bounded summary of the result, ``custom_metadata`` =
  ``{"agent_id", "prov": {"wasAssociatedWith": agent_id}, "side": "server"}``.
  Sync and async tools; the signature is kept (``functools.wraps``), so the
  tool's schema is unchanged; the tool's own exception is recorded (ERROR)
  and re-raised unchanged.
* client side, ``FlowceptClientSession(session, agent_id=...)`` wraps an
  ``mcp.ClientSession``: ``call_tool`` is recorded (activity
  ``mcp:<tool>``, with the server's ``isError`` flag and a summary of the
  returned content); everything else passes straight through.

``agent_id`` (or, when not given, a per-process id) names the agent; the
``mcp:agent`` record registered once per agent is the PROV agent entity.
"""
from __future__ import annotations

import functools
import inspect
import os
import threading
import time
from typing import Any, Dict, Optional

from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, STATUS_ERROR, STATUS_FINISHED

_SUMMARY = 512
_agents: Dict[str, int] = {}
_agents_lock = threading.Lock()


def _session():
    from flowcept.capture import session as runtime
    return runtime._session or runtime.ensure_session()


def _summary(value: Any, limit: int = _SUMMARY) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= limit else {"text": value[:limit], "len": len(value)}
    if isinstance(value, (list, tuple)):
        return [_summary(v, limit) for v in value[:32]]
    if isinstance(value, dict):
        return {str(k): _summary(v, limit) for k, v in list(value.items())[:32]}
    dump = getattr(value, "model_dump", None)   # pydantic results (mcp types)
    if dump is not None:
        try:
            return _summary(dump(exclude_none=True), limit)
        except Exception:
            pass
    r = repr(value)
    return {"type": type(value).__name__, "repr": r[:limit]}


def _agent_task_id(s, agent_id: str) -> int:
    """The agent's entity record (pushed once per agent and session)."""
    key = f"{id(s)}:{agent_id}"
    with _agents_lock:
        tid = _agents.get(key)
        if tid is None:
            from flowcept.adapters.base import source_task_id
            from flowcept.record.payload import encode
            tid = _agents[key] = source_task_id("mcp-agent", agent_id)
            now = time.time_ns()
            body = {"generated": {"agent_id": agent_id, "pid": os.getpid()},
                    "custom_metadata": {"entity": "agent", "prov": {"type": "prov:Agent"}}}
            s.push(tid, 0, now, now, "mcp:agent", STATUS_FINISHED, encode(body), FLAG_PAYLOAD_MSGPACK)
    return tid


def _push(activity, agent_id, side, used, start, end, status, generated=None, extra=None):
    try:
        s = _session()
        if s is None:
            return
        from flowcept.capture.task import current_parent
        from flowcept.record.payload import encode
        agent_tid = _agent_task_id(s, agent_id)
        meta = {"agent_id": agent_id, "agent_task_id": agent_tid, "side": side,
                "prov": {"wasAssociatedWith": agent_id}}
        meta.update(extra or {})
        body = {"used": used, "custom_metadata": meta}
        if generated is not None:
            body["generated"] = generated
        s.push(s.next_task_id(), current_parent(), start, end, activity, status,
               encode(body), FLAG_PAYLOAD_MSGPACK)
    except Exception:   # provenance never breaks the agent
        pass


def _default_agent() -> str:
    return f"agent-{os.getpid()}"


def agent_flowcept_task(func=None, *, agent_id: Optional[str] = None, name: Optional[str] = None,
                        tags=None, telemetry: bool = False):
    """Decorator for MCP tool functions (see the module doc); telemetry=True
    adds CPU/memory/process snapshots at the call's start and end."""

    def decorate(fn):
        activity = name or fn.__name__
        sig = inspect.signature(fn)

        def used_of(args, kwargs):
            try:
                bound = sig.bind_partial(*args, **kwargs)
                return {k: _summary(v) for k, v in bound.arguments.items() if k not in ("ctx", "self")}
            except TypeError:
                return {"args": _summary(list(args)), **{k: _summary(v) for k, v in kwargs.items()}}

        static = {"tags": tags} if tags else {}
        tel = None
        if telemetry:
            from flowcept.adapters.telemetry import telemetry as shared
            tel = shared()

        def with_tel(at_start):
            if tel is None:
                return static or None
            return {**static, "telemetry_at_start": at_start, "telemetry_at_end": tel.capture()}

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args, **kwargs):
                t0 = tel.capture() if tel is not None else None
                start = time.time_ns()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as e:
                    end = time.time_ns()
                    _push(activity, agent_id or _default_agent(), "server", used_of(args, kwargs),
                          start, end, STATUS_ERROR, None,
                          {**(with_tel(t0) or {}), "error": f"{type(e).__name__}: {e}"[:500]})
                    raise
                end = time.time_ns()
                _push(activity, agent_id or _default_agent(), "server", used_of(args, kwargs), start,
                      end, STATUS_FINISHED, {"result": _summary(result)}, with_tel(t0))
                return result
            return awrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0 = tel.capture() if tel is not None else None
            start = time.time_ns()
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                end = time.time_ns()
                _push(activity, agent_id or _default_agent(), "server", used_of(args, kwargs), start,
                      end, STATUS_ERROR, None,
                      {**(with_tel(t0) or {}), "error": f"{type(e).__name__}: {e}"[:500]})
                raise
            end = time.time_ns()
            _push(activity, agent_id or _default_agent(), "server", used_of(args, kwargs), start,
                  end, STATUS_FINISHED, {"result": _summary(result)}, with_tel(t0))
            return result
        return wrapper

    return decorate(func) if func is not None else decorate


class FlowceptClientSession:
    """Wraps an ``mcp.ClientSession``: tool calls recorded, the rest passed through."""

    def __init__(self, session, agent_id: Optional[str] = None):
        self._inner = session
        self.agent_id = agent_id or _default_agent()

    def __getattr__(self, item):
        return getattr(self._inner, item)

    async def call_tool(self, name: str, arguments: Optional[dict] = None, *args, **kwargs):
        start = time.time_ns()
        used = {k: _summary(v) for k, v in (arguments or {}).items()}
        try:
            result = await self._inner.call_tool(name, arguments, *args, **kwargs)
        except BaseException as e:
            _push(f"mcp:{name}", self.agent_id, "client", used, start, time.time_ns(), STATUS_ERROR,
                  None, {"error": f"{type(e).__name__}: {e}"[:500]})
            raise
        is_error = bool(getattr(result, "isError", False) or getattr(result, "is_error", False))
        content = getattr(result, "content", None)
        gen = {"content": _summary(content), "is_error": is_error}
        structured = getattr(result, "structuredContent", None) or getattr(result, "structured_content", None)
        if structured is not None:
            gen["structured"] = _summary(structured)
        _push(f"mcp:{name}", self.agent_id, "client", used, start, time.time_ns(),
              STATUS_ERROR if is_error else STATUS_FINISHED, gen, None)
        return result
