"""The Python capture API: ``@flowcept_task``, ``FlowceptTask``,
``FlowceptLoop`` (and ``FlowceptLightweightLoop``), with Flowcept 1.0.3's
signatures: the one implementation of each (``flowcept.compat`` and
Flowcept's import paths only re-export them).

Per call the decorator reads the clock twice, takes a task id, links the
parent (the innermost open task of this thread / asyncio task: see
``current_parent``), encodes used/generated with msgpack and pushes one
record into the ring.  The compiled wrapper does all of it in C; a Python
wrapper runs where a call needs Python per call (an ``args_handler``,
telemetry, an ``async def``, no compiled extension).  With capture disabled
in the environment at decoration time (FLOWCEPT_ENABLED=0) the decorator
returns the function unchanged.

What a record holds, as Flowcept writes it: ``used`` the bound arguments
(defaults applied, ``self``/``cls`` left out), ``generated`` a returned dict
as it is, else named by ``output_names``, else the return value (kept as
``{"return": value}``, which readers show as Flowcept's ``{"arg_0": value}``);
values JSON cannot hold as ``<Class>_instance_id_<id>`` (configuration key
``value_descriptions``).
"""
from __future__ import annotations

import contextvars
import functools
import inspect
from time import time_ns
from typing import Any, Callable, Dict, Optional, Sequence

from flowcept.capture import session as runtime
from flowcept.record.layout import (FLAG_PAYLOAD_MSGPACK, STATUS_ERROR, STATUS_FINISHED,
                                    STATUS_RUNNING, format_task_id, parse_task_id)
from flowcept.record.payload import encode, placeholder, placeholders

# Task id of the innermost open task of this thread / asyncio task (0: none).
current_task_id: contextvars.ContextVar[int] = contextvars.ContextVar("flowcept_task", default=0)

_fastcapture = runtime.fastcapture   # the compiled wrapper of sync functions, or None


def _ensure_state():
    """Called by a compiled wrapper when no session is active: its State or None."""
    s = runtime.ensure_session()
    return None if s is None else s._fast


if _fastcapture is not None:
    _fastcapture.configure(current_task_id, _ensure_state)

# The innermost open task (0: none).  A compiled wrapper does not set the
# ContextVar (a set and a reset cost more than the rest of its call): it
# keeps its task in a per-thread slot with the ContextVar's value at entry;
# that slot wins while the ContextVar still holds that value.
current_parent: Callable[[], int] = getattr(_fastcapture, "current_parent", current_task_id.get)

# Flowcept's task statuses as record statuses; any other status text is kept
# in the payload ("status") and shown as given.
STATUS_CODES = {"FINISHED": STATUS_FINISHED, "ERROR": STATUS_ERROR, "RUNNING": STATUS_RUNNING}

# Flowcept's agent fields a decorator or FlowceptTask may carry (kept in every record).
AGENT_FIELDS = ("agent_id", "source_agent_id", "agent_name", "source_agent_name")


def _settings():
    """The process configuration, or None when it is wrong (capture then stays
    out of the way; the error is reported when a session would start)."""
    from flowcept.config import ConfigError, process_config
    try:
        return process_config()
    except ConfigError:
        return None


def _use_compiled() -> bool:
    cfg = _settings()
    return _fastcapture is not None and not (cfg is not None and cfg.pure_python)


def _pre_encode(extra: dict) -> Optional[bytes]:
    """The key/value pairs of extra as msgpack (a compiled wrapper appends them)."""
    import msgpack
    from flowcept.record.payload import _describe
    try:
        packer = msgpack.Packer(default=_describe, use_bin_type=True, datetime=False,
                                strict_types=False)
        return b"".join(packer.pack(k) + packer.pack(v) for k, v in extra.items())
    except Exception:  # the wrapper then builds every payload in Python
        return None


def _disabled_by_env() -> bool:
    cfg = _settings()
    return cfg is not None and not cfg.enabled


def _telemetry_default() -> bool:
    cfg = _settings()
    return bool(cfg is not None and cfg.telemetry)


def _telemetry_is_empty() -> bool:
    """Telemetry of no part: every snapshot is {} (Flowcept's settings with every
    telemetry_capture part off), a constant the compiled wrapper can write."""
    cfg = _settings()
    return cfg is not None and not cfg.telemetry_parts.replace(",", "").strip()


def _output_names(output_names: Any) -> Optional[list]:
    if output_names is None:
        return None
    if isinstance(output_names, str):
        return [output_names]
    return list(output_names)


def _generated(result: Any, output_names: Optional[Sequence[str]]) -> Any:
    if result is None or isinstance(result, dict):
        return result
    if output_names:
        if isinstance(result, (tuple, list)) and len(result) == len(output_names):
            return dict(zip(output_names, result))
        if len(output_names) == 1:
            return {output_names[0]: result}
    return {"return": result}


def _text(obj: Any, limit: int = 1000) -> str:
    """str(obj) cut to limit, valid UTF-8; never raises (a hostile __str__
    or a lone surrogate becomes a placeholder text)."""
    try:
        text = str(obj)
        text = str.__str__(text)[:limit]
    except BaseException as e:  # noqa: B036 - capture must not change the outcome
        placeholders[0] += 1
        try:
            text = f"<str() failed: {type(e).__name__}>"
        except BaseException:
            text = "<str() failed>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_doc(exc: BaseException) -> Dict[str, str]:
    cls = type(exc)
    return {"type": _text(f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"),
            "message": _text(exc)}


def _activity_name(activity_id: Any, func: Any) -> str:
    """The activity name of a decorated callable, always a str (a callable
    without __name__, e.g. a functools.partial, is named by its type)."""
    if isinstance(activity_id, str) and activity_id:
        return str.__str__(activity_id)
    if activity_id:
        return _text(activity_id)
    name = getattr(func, "__name__", None)
    return name if isinstance(name, str) else _text(getattr(type(func), "__name__", "task"))


def _safe_finish(finish, *args) -> None:
    """Runs a wrapper's finish(); whatever goes wrong there is logged once
    and counted, never raised into the user's code."""
    try:
        finish(*args)
    except Exception as e:
        runtime.capture_failed(e)


def _telemetry(s) -> Optional[dict]:
    """A telemetry snapshot from the session's provider (None without one);
    never raises."""
    source = getattr(s, "telemetry", None)
    if source is None:
        return None
    try:
        return source()
    except Exception as e:
        runtime.capture_failed(e)
        return None


def flowcept_task(func: Optional[Callable] = None, *, activity_id: Optional[str] = None,
                  output_names: Any = None, tags: Optional[Sequence[str]] = None,
                  custom_metadata: Optional[dict] = None, capture_args: Optional[bool] = None,
                  subtype: Optional[str] = None, agent_id: Optional[str] = None,
                  args_handler: Optional[Callable] = None,
                  capture_telemetry: Optional[bool] = None, **agent_fields: Any):
    """Decorates a function (sync or async) so that each call is a task
    record (Flowcept's ``@flowcept_task`` / ``@flowcept_task(...)``).

    ``output_names`` (a name or a list) names the return value(s);
    ``tags``, ``custom_metadata``, ``subtype`` and the agent fields
    (``agent_id``, ``source_agent_id``, ``agent_name``,
    ``source_agent_name``) go into every record; ``args_handler(*args,
    **kwargs) -> dict`` replaces the bound arguments (and, called with the
    result, the return value) as Flowcept's does; ``capture_telemetry``
    (default: the ``telemetry`` setting) adds ``telemetry_at_start`` and
    ``telemetry_at_end``.  An exception is recorded with status ERROR and
    re-raised.
    """
    unknown = set(agent_fields) - set(AGENT_FIELDS)
    if unknown:
        raise TypeError(f"flowcept_task() got unexpected keyword argument(s) "
                        f"{', '.join(sorted(unknown))}")
    options = dict(activity_id=activity_id, output_names=output_names, tags=tags,
                   custom_metadata=custom_metadata, capture_args=capture_args, subtype=subtype,
                   agent_id=agent_id, args_handler=args_handler,
                   capture_telemetry=capture_telemetry, **agent_fields)
    if func is None:
        return functools.partial(flowcept_task, **options)
    if _disabled_by_env():
        return func
    output_names = _output_names(output_names)
    activity = _activity_name(activity_id, func)
    try:
        sig = inspect.signature(func)
        params = list(sig.parameters.values())
    except (TypeError, ValueError):
        sig, params = None, []
    plain = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY) for p in params)
    has_defaults = any(p.default is not p.empty for p in params)
    simple = plain and not has_defaults   # used = the arguments as passed
    names = [p.name for p in params]
    skip_first = bool(names) and names[0] in ("self", "cls")
    extra: Dict[str, Any] = {}
    if tags:
        extra["tags"] = list(tags)
    if custom_metadata:
        extra["custom_metadata"] = dict(custom_metadata)
    if subtype:   # Flowcept's task fields, constant per decorated function
        extra["subtype"] = str(subtype)
    agents = dict(agent_fields, agent_id=agent_id)
    for key in AGENT_FIELDS:
        if agents.get(key) is not None:
            extra[key] = str(agents[key])
    telemetry = _telemetry_default() if capture_telemetry is None else bool(capture_telemetry)
    if telemetry and _telemetry_is_empty():
        extra["telemetry_at_start"] = {}
        extra["telemetry_at_end"] = {}
        telemetry = False

    def used_of(args, kwargs):
        if not args and simple:
            return kwargs
        if simple and len(args) <= len(names):
            used = dict(zip(names, args))
            if kwargs:
                used.update(kwargs)
        else:
            try:
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                used = dict(bound.arguments)
            except (TypeError, AttributeError):
                used = {f"arg_{i}": a for i, a in enumerate(args)}
                used.update(kwargs)
        if skip_first:
            used.pop(names[0], None)
        return used

    def handled_used(args, kwargs):
        if args_handler is None:
            return used_of(args, kwargs)
        try:
            if sig is None:
                raise TypeError
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return args_handler(**dict(bound.arguments))
        except Exception:
            return args_handler(*args, **kwargs)

    def handled_generated(result):
        if args_handler is None:
            return _generated(result, output_names)
        if result is None:
            return None
        if isinstance(result, dict):
            try:
                return args_handler(**result)
            except Exception:
                return result
        named = _generated(result, output_names)
        if "return" in named and len(named) == 1 and "return" not in (output_names or ()):
            return args_handler(result)   # Flowcept's positional capture: {"arg_0": value}
        try:
            return args_handler(**named)
        except Exception:
            return named

    want_args = capture_args

    def payload_of(want, args, kwargs, result, exc, tel_start=None, s=None):
        """The record's payload bytes; never raises (the compiled wrapper calls it too)."""
        try:
            return _payload_of(want, args, kwargs, result, exc, tel_start, s)
        except Exception as e:   # e.g. a hostile __len__, signature or args_handler
            return placeholder("payload", e)

    def _payload_of(want, args, kwargs, result, exc, tel_start, s):
        if not want:
            doc = dict(extra)
        else:
            doc = {"used": handled_used(args, kwargs)}
            if exc is None:
                gen = handled_generated(result)
                if gen is not None:
                    doc["generated"] = gen
            if extra:
                doc.update(extra)
        if exc is not None:
            doc["error"] = _error_doc(exc)
        if telemetry and s is not None:
            doc["telemetry_at_start"] = tel_start
            doc["telemetry_at_end"] = _telemetry(s)
        return encode(doc)

    def finish(s, tid, parent, start, args, kwargs, result, exc, tel_start=None):
        end = time_ns()
        want = not (want_args is False or (want_args is None and not s.config.capture_args))
        data = payload_of(want, args, kwargs, result, exc, tel_start, s)
        s.push(tid, parent, start, end, activity, STATUS_FINISHED if exc is None else STATUS_ERROR,
               data, FLAG_PAYLOAD_MSGPACK)

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def async_wrapper(*args, **kwargs):
            s = runtime.ensure_session()
            if s is None:
                return await func(*args, **kwargs)
            parent = current_parent()
            tid = s.next_task_id()
            token = current_task_id.set(tid)
            tel = _telemetry(s) if telemetry else None
            start = time_ns()
            try:
                result = await func(*args, **kwargs)
            except BaseException as e:
                current_task_id.reset(token)
                _safe_finish(finish, s, tid, parent, start, args, kwargs, None, e, tel)
                raise
            current_task_id.reset(token)
            _safe_finish(finish, s, tid, parent, start, args, kwargs, result, None, tel)
            return result
        async_wrapper.__flowcept_activity__ = activity
        return async_wrapper

    if args_handler is None and not telemetry and _use_compiled():
        fast_names = (isinstance(output_names, list) and all(type(n) is str for n in output_names)
                      and len(set(output_names)) == len(output_names))
        task = _fastcapture.Task(
            func, activity, tuple(names), simple, skip_first,
            tuple(output_names) if output_names else None, fast_names,
            _pre_encode(extra) if extra else None, len(extra),
            -1 if want_args is None else (0 if want_args is False else 1), used_of, payload_of)
        functools.update_wrapper(task, func)
        task.__flowcept_activity__ = activity
        return task

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        s = runtime.ensure_session()
        if s is None:
            return func(*args, **kwargs)
        parent = current_parent()
        tid = s.next_task_id()
        token = current_task_id.set(tid)
        tel = _telemetry(s) if telemetry else None
        start = time_ns()
        try:
            result = func(*args, **kwargs)
        except BaseException as e:
            current_task_id.reset(token)
            _safe_finish(finish, s, tid, parent, start, args, kwargs, None, e, tel)
            raise
        current_task_id.reset(token)
        _safe_finish(finish, s, tid, parent, start, args, kwargs, result, None, tel)
        return result

    wrapper.__flowcept_activity__ = activity
    return wrapper


def lightweight_flowcept_task(func: Optional[Callable] = None, **options: Any):
    """Flowcept's light decorator: the compiled capture, which is the light
    one already (Flowcept's records only keyword arguments here)."""
    if func is None:
        return functools.partial(lightweight_flowcept_task, **options)
    return flowcept_task(func, **options)


def telemetry_flowcept_task(func: Optional[Callable] = None, **options: Any):
    """A task with ``telemetry_at_start`` and ``telemetry_at_end``."""
    if func is None:
        return functools.partial(telemetry_flowcept_task, **options)
    return flowcept_task(func, capture_telemetry=True, **options)


def get_current_context_task_id() -> Optional[str]:
    """The innermost open task's id in its string form (None outside a task)."""
    tid = current_parent()
    s = runtime.current()
    if not tid or s is None:
        return None
    return format_task_id(s.workflow_id, tid)


def _parent_int(parent_task_id: Any) -> Optional[int]:
    """Our parent id of a Flowcept parent_task_id: an int, or our string
    form; None for another string (then it is kept in the payload)."""
    if parent_task_id is None:
        return 0
    if isinstance(parent_task_id, int) and not isinstance(parent_task_id, bool):
        return parent_task_id
    text = parent_task_id if isinstance(parent_task_id, str) else _text(parent_task_id)
    if len(text) == 33 and text[16] == "-":
        try:
            return parse_task_id(text)[1]
        except ValueError:
            pass
    return None


def _workflow_int(s, workflow_id: Any) -> Optional[int]:
    """Our workflow id for a task's workflow_id (None: the session's)."""
    if workflow_id is None:
        return None
    from flowcept.capture.workflow import workflow_int_id
    if not isinstance(workflow_id, (int, str)) or isinstance(workflow_id, bool):
        workflow_id = _text(workflow_id)
    wf = workflow_int_id(workflow_id)
    return None if wf == s.workflow_id else wf


def _status_code(status: Any):
    """(record status, Flowcept status text for the payload or None)."""
    if status is None:
        return STATUS_FINISHED, None
    if isinstance(status, int) and not isinstance(status, bool):
        return status, None   # our record status codes
    text = getattr(status, "value", status)
    text = text if isinstance(text, str) else _text(text)
    code = STATUS_CODES.get(text)
    return (code, None) if code is not None else (STATUS_FINISHED, text)


def _ns(seconds: Any) -> int:
    """A Flowcept time (seconds since the epoch) in ns; now when none is given
    or it is not a number (capture never raises into the caller)."""
    if seconds:
        try:
            return int(float(seconds) * 1e9)
        except (TypeError, ValueError, OverflowError):
            runtime.capture_failed(ValueError(f"not a time in seconds: {_text(seconds, 80)}"))
    return time_ns()


def _data_limit(config) -> int:
    """How large a task's explicit ``data`` (a file's bytes) may be: beyond
    max_payload_bytes, up to half a batch and half a ring."""
    return max(config.max_payload_bytes, min(config.batch_bytes, config.ring_bytes) // 2)


class FlowceptTask:
    """A task recorded explicitly (Flowcept's ``FlowceptTask``)::

        with FlowceptTask(activity_id="solve", used={"n": n}) as task:
            x = solve(n)
            task.end(generated={"x": x})     # optional; ends at block exit

    Every argument is optional.  ``task_id``, ``parent_task_id`` and
    ``workflow_id`` may be any string (documents show them as given);
    giving ``generated``, ``ended_at``, ``stdout`` or ``stderr`` ends the
    task at once.  As a context manager the task is the parent of the tasks
    inside the block; an exception there ends it with ERROR (its text in
    ``stderr``) and propagates.  ``send()`` records it as a message (ended
    when it started).  ``data`` (bytes) is kept up to half a batch.
    """

    def __init__(self, task_id: Optional[str] = None, workflow_id: Optional[str] = None,
                 campaign_id: Optional[str] = None, activity_id: Optional[str] = None,
                 agent_id: Optional[str] = None, source_agent_id: Optional[str] = None,
                 parent_task_id: Optional[str] = None, used: Optional[Dict] = None,
                 data: Any = None, subtype: Optional[str] = None, hostname: Optional[str] = None,
                 tags: Optional[Sequence[str]] = None, adapter_id: Optional[str] = None,
                 custom_metadata: Optional[Dict] = None, generated: Optional[Dict] = None,
                 started_at: Optional[float] = None, ended_at: Optional[float] = None,
                 stdout: Any = None, stderr: Any = None, status: Any = None,
                 capture_telemetry: Optional[bool] = None, **fields: Any):
        self.activity_id = activity_id if activity_id is not None else "task"
        self.used = used
        self.data = data
        self.subtype = subtype
        self.tags = tags
        self.custom_metadata = custom_metadata
        self.generated = None
        self._fields = {k: v for k, v in (("agent_id", agent_id), ("source_agent_id", source_agent_id),
                                          ("hostname", hostname), ("adapter_id", adapter_id),
                                          ("campaign_id", campaign_id)) if v is not None}
        self._fields.update((k, v) for k, v in fields.items() if v is not None)
        self._custom_task_id = task_id
        self._ended = True
        self._token = None
        self.task_id = 0
        s = self._session = runtime.ensure_session()
        if s is None:
            return
        self._ended = False
        self.started_ns = _ns(started_at)
        self.task_id = s.next_task_id()
        self._workflow = _workflow_int(s, workflow_id)
        self._workflow_text = workflow_id if isinstance(workflow_id, str) else None
        parent = _parent_int(parent_task_id)
        self._parent_text = (parent_task_id if isinstance(parent_task_id, str)
                             else _text(parent_task_id)) if parent is None else None
        self.parent_id = current_parent() if parent_task_id is None else (parent or 0)
        self._telemetry = _telemetry_default() if capture_telemetry is None else bool(capture_telemetry)
        self._tel_start = _telemetry(s) if self._telemetry else None
        if generated or ended_at or stdout or stderr is not None:
            self.end(generated=generated, ended_at=ended_at, stdout=stdout, stderr=stderr,
                     status=status)

    # -- Flowcept's accessors ---------------------------------------------------
    def get_id(self) -> Optional[str]:
        if self._custom_task_id is not None:
            return self._custom_task_id
        s = self._session
        return format_task_id(self._workflow or s.workflow_id, self.task_id) if s else None

    def get_workflow_id(self) -> Optional[str]:
        if self._workflow_text is not None:
            return self._workflow_text
        from flowcept.capture.workflow import Flowcept
        return Flowcept.current_workflow_id

    def get_campaign_id(self) -> Optional[str]:
        from flowcept.capture.workflow import Flowcept
        return self._fields.get("campaign_id", Flowcept.campaign_id)

    def get_agent_id(self) -> Optional[str]:
        return self._fields.get("agent_id")

    @property
    def started_at(self) -> Optional[float]:
        return self.started_ns / 1e9 if hasattr(self, "started_ns") else None

    # -- the block -----------------------------------------------------------------
    def __enter__(self) -> "FlowceptTask":
        if not self._ended and self._token is None:
            self._token = current_task_id.set(self.task_id)
        return self

    begin = __enter__   # the tasks that follow are its children until end()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self._ended:
            if exc is not None and not isinstance(exc, GeneratorExit):
                self.end(error=exc)
            else:
                self.end()
        return False

    def _reset(self) -> None:
        if self._token is not None:
            try:
                current_task_id.reset(self._token)
            except ValueError:   # ended in another context
                pass
            self._token = None

    def end(self, generated: Optional[Dict] = None, ended_at: Optional[float] = None,
            stdout: Any = None, stderr: Any = None, data: Any = None,
            custom_metadata: Optional[Dict] = None, status: Any = None,
            error: Optional[BaseException] = None) -> None:
        """Ends the task: ``status`` defaults to ERROR when ``stderr`` is
        given, else FINISHED (any of Flowcept's statuses, or ours as an int);
        ``error`` (an exception) makes it ERROR with its text in ``stderr``."""
        if self._ended:
            return
        err = None
        if error is not None:
            err = _error_doc(error)
            stderr = stderr if stderr is not None else err.get("message")
            if status is None or status == STATUS_FINISHED:
                status = STATUS_ERROR
        if generated is not None:
            self.generated = generated
        if data:
            self.data = data
        if custom_metadata is not None:
            self.custom_metadata = {**(self.custom_metadata or {}), **custom_metadata}
        if status is None:
            status = "ERROR" if stderr else "FINISHED"
        end_ns = _ns(ended_at)
        code, text = _status_code(status)
        self._push(end_ns, code, text, stdout, stderr, err)

    def send(self) -> "FlowceptTask":
        """Records the task as it is, ending when it started (a message)."""
        if not self._ended:
            self._push(self.started_ns, STATUS_FINISHED, None, None, None, None)
        return self

    def _push(self, end_ns: int, code: int, status_text, stdout, stderr, err) -> None:
        self._ended = True
        self._reset()
        s = self._session
        try:
            body: Dict[str, Any] = {}
            for key, value in (("used", self.used), ("generated", self.generated),
                               ("data", self.data), ("subtype", self.subtype),
                               ("stdout", stdout), ("stderr", stderr), ("status", status_text),
                               ("task_id", self._custom_task_id),
                               ("parent_task_id", self._parent_text),
                               ("workflow_id", self._workflow_text if self._workflow else None)):
                if value is not None:
                    body[key] = value
            if err is not None:
                body["error"] = err
            if self.tags:
                body["tags"] = list(self.tags)
            if self.custom_metadata:
                body["custom_metadata"] = dict(self.custom_metadata)
            for k, v in self._fields.items():
                body.setdefault(k, v)
            if self._telemetry:
                body["telemetry_at_start"] = self._tel_start
                body["telemetry_at_end"] = _telemetry(s)
            data = encode(body) if self.data is None else self._encode_with_data(s, body)
            s.push(self.task_id, self.parent_id, self.started_ns, end_ns, self.activity_id, code,
                   data, workflow_id=self._workflow)
        except Exception as e:   # provenance never breaks the science
            runtime.capture_failed(e)

    @staticmethod
    def _encode_with_data(s, body: dict) -> bytes:
        from flowcept.record import payload
        return payload.encode(body, limit=_data_limit(s.config))

    def __repr__(self) -> str:
        return f"FlowceptTask(activity_id={self.activity_id!r}, task_id={self.get_id()!r})"


class FlowceptLoop:
    """Records each iteration of a loop as a task (Flowcept's ``FlowceptLoop``)::

        loop = FlowceptLoop(range(10), loop_name="train", item_name="epoch")
        for epoch in loop:
            ...
            loop.end_iter({"loss": loss})     # the iteration's generated

    ``items``: a sized iterable, an int (a range) or an iterator, iterated as
    it comes (``items_length`` gives ``len()`` of an iterator).  Each iteration is a
    task ``{loop_name}_iteration`` with ``used`` = ``{"i": index, item_name:
    item}``, child of ``parent_task_id`` (default: the enclosing task).  The
    iteration that a ``break`` leaves is recorded too.  With ``loop_task``
    (default: the ``loop_task`` setting) the loop itself is one more task
    (subtype ``whole_loop``), the iterations' parent.
    ``capture_enabled=False`` iterates without recording.
    """

    _light = False

    def __init__(self, items: Any, loop_name: str = "loop", item_name: str = "item",
                 parent_task_id: Optional[str] = None, workflow_id: Optional[str] = None,
                 items_length: int = 0, capture_enabled: bool = True,
                 capture_items: bool = True, loop_task: Optional[bool] = None):
        if isinstance(items, int) and not isinstance(items, bool):
            items = range(items)
        if not hasattr(items, "__iter__"):
            raise TypeError("FlowceptLoop needs an iterable, an iterator or an int, "
                            f"got {type(items).__name__}")
        self.loop_name = loop_name
        self.item_name = item_name
        self.parent_task_id = parent_task_id
        self.workflow_id = workflow_id
        self.capture_items = capture_items
        self.enabled = bool(capture_enabled) and not _disabled_by_env()
        length = _length(items)
        if length is None and items_length:
            length = int(items_length)
        self.items = items   # an iterator is iterated as it comes (it may never end)
        self._max = length
        cfg = _settings()
        self.loop_task = (bool(cfg is not None and cfg.loop_task) if loop_task is None
                          else bool(loop_task))
        self._group_id = f"{id(self)}"
        self._iter_task: Optional[FlowceptTask] = None
        self._iter_generated: Optional[dict] = None
        self._gen = None

    def __len__(self) -> int:
        if self._max is None:
            raise TypeError("this FlowceptLoop iterates an iterator: pass items_length for len()")
        return self._max

    def end_iter(self, generated_value: dict) -> None:
        """The current iteration's ``generated``."""
        self._iter_generated = generated_value

    def get_current_iteration_id(self) -> Optional[str]:
        return self._iter_task.get_id() if self._iter_task is not None else None

    def __next__(self):
        if self._gen is None:
            self._gen = self.__iter__()
        return next(self._gen)

    def __iter__(self):
        if not self.enabled:
            return iter(self.items)
        return self._captured()

    def _captured(self):
        # names as text: a hostile loop_name/item_name must not break the loop
        iter_name = _text(self.loop_name) + "_iteration"
        item_key = self.item_name if type(self.item_name) is str else _text(self.item_name)
        parent = self.parent_task_id
        loop = None
        if self.loop_task:
            loop = FlowceptTask(activity_id=_text(self.loop_name), subtype="whole_loop",
                                parent_task_id=parent, workflow_id=self.workflow_id,
                                used={"items": self._max} if self._max is not None else None,
                                capture_telemetry=False)
            loop.begin()
            parent = None   # the iterations' parent is the loop task (the enclosing one)
        count = 0
        exc: Optional[BaseException] = None
        light = self._light
        try:
            for i, item in enumerate(self.items):
                used = {"i": i}
                if self.capture_items:
                    used[item_key] = item
                task = self._iter_task = FlowceptTask(
                    activity_id=iter_name, used=used, parent_task_id=parent,
                    workflow_id=self.workflow_id, group_id=self._group_id,
                    capture_telemetry=False if light else None)
                task.begin()   # the tasks of the iteration's body are its children
                self._iter_generated = None
                try:
                    yield item
                except GeneratorExit:
                    # `break` (or the loop object dropped): the iteration ran to
                    # its end; it counts, with what end_iter() attached
                    task.end(generated=self._iter_generated)
                    count += 1
                    raise
                except BaseException as e:
                    task.end(error=e)
                    raise
                task.end(generated=self._iter_generated)
                count += 1
        except BaseException as e:
            exc = e if not isinstance(e, GeneratorExit) else None
            raise
        finally:
            if loop is not None:
                loop.end(generated={"iterations": count}, error=exc)


class FlowceptLightweightLoop(FlowceptLoop):
    """Flowcept's lighter loop: the same records as FlowceptLoop (one task per
    iteration), never with telemetry."""

    _light = True


def _length(items) -> Optional[int]:
    """len(items), or None when there is none or it fails (capture must not raise)."""
    if not hasattr(items, "__len__"):
        return None
    try:
        return len(items)
    except Exception:
        return None
