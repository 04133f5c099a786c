"""The Python capture API: @flowcept_task, FlowceptTask, FlowceptLoop.

Per call the decorator reads the clock twice, takes a task id, links the
parent (the innermost open task of this thread / asyncio task: see
``current_parent``), encodes used/generated with msgpack and pushes one
record into the ring.  The compiled wrapper does all of it in C.  With capture disabled in the environment at decoration
time (FLOWCEPT_ENABLED=0) the decorator returns the function unchanged.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
from time import time_ns
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

from flowcept.capture import session as runtime
from flowcept.record.layout import FLAG_PAYLOAD_MSGPACK, STATUS_ERROR, STATUS_FINISHED
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


def _generated(result: Any, output_names: Optional[Sequence[str]]) -> Any:
    if output_names:
        if len(output_names) == 1:
            return {output_names[0]: result}
        if isinstance(result, (tuple, list)) and len(result) == len(output_names):
            return dict(zip(output_names, result))
    if result is None or isinstance(result, dict):
        return result
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


def flowcept_task(func: Optional[Callable] = None, *, activity_id: Optional[str] = None,
                  output_names: Optional[Sequence[str]] = None, tags: Optional[Sequence[str]] = None,
                  custom_metadata: Optional[dict] = None, capture_args: Optional[bool] = None,
                  subtype: Optional[str] = None, agent_id: Optional[str] = None):
    """Decorates a function (sync or async) so that each call is a task record.

    ``used`` holds the bound arguments (``self``/``cls`` left out),
    ``generated`` the return value (a dict as is, named by ``output_names``,
    else ``{"return": value}``).  An exception is recorded with status ERROR
    and re-raised.  ``tags`` and ``custom_metadata`` go into every record.
    """
    if func is None:
        return functools.partial(flowcept_task, activity_id=activity_id, output_names=output_names,
                                 tags=tags, custom_metadata=custom_metadata, capture_args=capture_args,
                                 subtype=subtype, agent_id=agent_id)
    if _disabled_by_env():
        return func
    activity = _activity_name(activity_id, func)
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        params = []
    simple = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY) for p in params)
    names = [p.name for p in params]
    skip_first = bool(names) and names[0] in ("self", "cls")
    extra = {}
    if tags:
        extra["tags"] = list(tags)
    if custom_metadata:
        extra["custom_metadata"] = dict(custom_metadata)
    if subtype:   # Flowcept's task fields, constant per decorated function
        extra["subtype"] = str(subtype)
    if agent_id:
        extra["agent_id"] = str(agent_id)
    sig = inspect.signature(func) if params else None

    def used_of(args, kwargs):
        if not args:
            return kwargs
        if simple and len(args) <= len(names):
            used = dict(zip(names, args))
            if kwargs:
                used.update(kwargs)
        else:
            try:
                bound = sig.bind(*args, **kwargs)
                used = dict(bound.arguments)
            except (TypeError, AttributeError):
                used = {f"arg_{i}": a for i, a in enumerate(args)}
                used.update(kwargs)
        if skip_first:
            used.pop(names[0], None)
        return used

    want_args = capture_args

    def payload_of(want, args, kwargs, result, exc):
        """The record's payload bytes; never raises (the compiled wrapper calls it too)."""
        try:
            return _payload_of(want, args, kwargs, result, exc)
        except Exception as e:   # e.g. a hostile __len__ or signature
            return placeholder("payload", e)

    def _payload_of(want, args, kwargs, result, exc):
        if not want:
            doc = dict(extra)
        else:
            doc = {"used": used_of(args, kwargs)}
            if exc is None:
                gen = _generated(result, output_names)
                if gen is not None:
                    doc["generated"] = gen
            if extra:
                doc.update(extra)
        if exc is not None:
            doc["error"] = _error_doc(exc)
        return encode(doc)

    def finish(s, tid, parent, start, args, kwargs, result, exc):
        end = time_ns()
        want = not (want_args is False or (want_args is None and not s.config.capture_args))
        data = payload_of(want, args, kwargs, result, exc)
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
            start = time_ns()
            try:
                result = await func(*args, **kwargs)
            except BaseException as e:
                current_task_id.reset(token)
                _safe_finish(finish, s, tid, parent, start, args, kwargs, None, e)
                raise
            current_task_id.reset(token)
            _safe_finish(finish, s, tid, parent, start, args, kwargs, result, None)
            return result
        async_wrapper.__flowcept_activity__ = activity
        return async_wrapper

    if _use_compiled():
        fast_names = (isinstance(output_names, (list, tuple)) and all(type(n) is str for n in output_names)
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
        start = time_ns()
        try:
            result = func(*args, **kwargs)
        except BaseException as e:
            current_task_id.reset(token)
            _safe_finish(finish, s, tid, parent, start, args, kwargs, None, e)
            raise
        current_task_id.reset(token)
        _safe_finish(finish, s, tid, parent, start, args, kwargs, result, None)
        return result

    wrapper.__flowcept_activity__ = activity
    return wrapper


class FlowceptTask:
    """A task for a block of code::

        with FlowceptTask("solve", used={"n": n}) as task:
            x = solve(n)
            task.end(generated={"x": x})     # optional; ends at block exit
    """

    def __init__(self, activity_id: str, used: Optional[dict] = None, tags: Optional[Sequence[str]] = None,
                 custom_metadata: Optional[dict] = None):
        self.activity_id = activity_id
        self.used = used
        self.tags = tags
        self.custom_metadata = custom_metadata
        self.generated = None
        self.task_id = 0
        self._session = None
        self._done = False

    def begin(self) -> "FlowceptTask":
        s = self._session = runtime.ensure_session()
        if s is not None:
            self.parent_id = current_parent()
            self.task_id = s.next_task_id()
            self._token = current_task_id.set(self.task_id)
            self.start_ns = time_ns()
        return self

    __enter__ = begin

    def end(self, generated: Optional[dict] = None, status: int = STATUS_FINISHED,
            error: Optional[BaseException] = None) -> None:
        if generated is not None:
            self.generated = generated
        s = self._session
        if s is None or self._done:
            return
        self._done = True
        end = time_ns()
        try:
            current_task_id.reset(self._token)
        except ValueError:  # ended in another context: leave the var alone
            pass
        try:
            self._push(s, end, status, error)
        except Exception as e:   # capture never raises into the user's block
            runtime.capture_failed(e)

    def _push(self, s, end: int, status: int, error: Optional[BaseException]) -> None:
        doc: Dict[str, Any] = {}
        if self.used is not None:
            doc["used"] = self.used
        if self.generated is not None:
            doc["generated"] = self.generated
        if self.tags:
            doc["tags"] = list(self.tags)
        if self.custom_metadata:
            doc["custom_metadata"] = dict(self.custom_metadata)
        if error is not None:
            doc["error"] = _error_doc(error)
            status = STATUS_ERROR
        s.push(self.task_id, self.parent_id, self.start_ns, end, self.activity_id, status, encode(doc))

    def __exit__(self, exc_type, exc, tb):
        self.end(error=exc)
        return False


class FlowceptLoop:
    """Iterates and records the loop as a task and each iteration as its child::

        for epoch in FlowceptLoop(range(10), loop_name="train", item_name="epoch"):
            ...

    ``loop.end_iter(generated={...})`` attaches outputs to the current iteration.
    """

    def __init__(self, items: Iterable, loop_name: str = "loop", item_name: str = "item",
                 capture_items: bool = True):
        self.items = items
        self.loop_name = loop_name
        self.item_name = item_name
        self.capture_items = capture_items
        self._iter_task: Optional[FlowceptTask] = None
        self._iter_generated: Optional[dict] = None

    def end_iter(self, generated: dict) -> None:
        self._iter_generated = generated

    def __iter__(self):
        try:
            total = len(self.items)  # type: ignore[arg-type]
        except Exception:   # no len(), or a hostile one: the loop does not need it
            total = None
        # names as text: a hostile loop_name/item_name must not break the loop
        iter_name = _text(self.loop_name) + "_iteration"
        item_key = self.item_name if type(self.item_name) is str else _text(self.item_name)
        loop = FlowceptTask(self.loop_name, used={"items": total} if total is not None else None)
        loop.begin()
        count = 0
        exc: Optional[BaseException] = None
        try:
            for i, item in enumerate(self.items):
                used = {"index": i}
                if self.capture_items:
                    used[item_key] = item
                task = self._iter_task = FlowceptTask(iter_name, used=used)
                task.begin()
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
            loop.end(generated={"iterations": count}, error=exc)
