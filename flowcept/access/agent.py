"""``flowcept ask "which tasks failed on rank 3, and what did they use?"``

An agent loop over any OpenAI-compatible chat endpoint (``POST
{base_url}/chat/completions``: OpenAI, Ollama, vLLM, llama.cpp's server,
...): it sends the question with the tool schemas of flowcept.access.tools,
runs the tool calls the model returns against the read-only query layer,
sends the results back, and stops at the model's answer.

Bounded: at most ``max_steps`` model calls and ``max_tool_calls`` tool runs,
tool answers capped in size, every HTTP call under ``timeout`` seconds.  The
answer comes back with the tool calls that produced it (``AgentResult``).
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

SYSTEM = ("You answer questions about a captured workflow run (tasks, their inputs 'used', outputs "
          "'generated', status, rank, timing) using the tools. Call tools to look things up; never "
          "invent task ids or numbers. Answer briefly, citing the numbers the tools returned.")


class AgentError(RuntimeError):
    pass


@dataclass
class AgentResult:
    answer: str
    calls: List[Dict[str, Any]] = field(default_factory=list)   # name, arguments, result (text)
    steps: int = 0
    seconds: float = 0.0
    stopped: str = "answer"   # answer | max_steps | max_tool_calls

    def describe(self) -> str:
        lines = [self.answer.strip() or "(no answer)"]
        if self.calls:
            lines.append("")
            lines.append(f"queries run ({len(self.calls)}):")
            for c in self.calls:
                lines.append(f"  {c['name']}({json.dumps(c['arguments'], sort_keys=True)})")
        if self.stopped != "answer":
            lines.append(f"(stopped: {self.stopped})")
        return "\n".join(lines)


def chat(base_url: str, payload: dict, api_key: Optional[str], timeout: float) -> dict:
    url = base_url.rstrip("/") + "/chat/completions"
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read(8 << 20))
    except urllib.error.HTTPError as e:
        body = e.read(2000).decode("utf-8", "replace")
        raise AgentError(f"{url}: HTTP {e.code}: {body}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (TimeoutError, socket.timeout)) and _accepts_connections(url):
            raise AgentError(f"{url}: the chat endpoint is up but did not answer within {timeout:g} s "
                             "(timed out); raise --timeout, or use a smaller or less loaded model") from None
        raise AgentError(f"{url}: cannot reach the chat endpoint ({reason}); check --base-url "
                         "(e.g. http://127.0.0.1:11434/v1 for Ollama)") from None
    except ValueError as e:
        raise AgentError(f"{url}: answer is not JSON: {e}") from None


def _accepts_connections(url: str, timeout: float = 3.0) -> bool:
    """Whether something listens at the URL's host and port (a timed-out call
    to it was then slow, not unreachable)."""
    u = urllib.parse.urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((u.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def ask(question: str, call: Callable[[str, Dict[str, Any]], str], base_url: str, model: str,
        api_key: Optional[str] = None, max_steps: int = 6, max_tool_calls: int = 8,
        timeout: float = 120.0, temperature: float = 0.0, max_tokens: int = 512,
        tools: Optional[List[dict]] = None) -> AgentResult:
    """Runs the loop.  ``call(name, arguments) -> text`` runs one tool (read-only)."""
    from flowcept.access.tools import openai_tools
    tools = tools if tools is not None else openai_tools()
    t0 = time.monotonic()
    messages: List[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    res = AgentResult(answer="")
    for step in range(max_steps):
        res.steps = step + 1
        reply = chat(base_url, {"model": model, "messages": messages, "tools": tools,
                                "tool_choice": "auto", "temperature": temperature,
                                "max_tokens": max_tokens}, api_key, timeout)
        try:
            msg = reply["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise AgentError(f"the chat endpoint answered without choices[0].message: "
                             f"{json.dumps(reply)[:300]}") from None
        calls = msg.get("tool_calls") or []
        if not calls:
            res.answer = msg.get("content") or ""
            break
        messages.append({"role": "assistant", "content": msg.get("content") or "", "tool_calls": calls})
        for tc in calls:
            fn = tc.get("function") or {}
            name = fn.get("name", "")
            raw = fn.get("arguments") or "{}"
            try:
                args = json.loads(raw) if isinstance(raw, str) else dict(raw)
            except (ValueError, TypeError):
                args = None
            if len(res.calls) >= max_tool_calls:
                result = json.dumps({"error": "tool call budget spent; answer with what you have"})
                res.stopped = "max_tool_calls"
            elif not isinstance(args, dict):
                result = json.dumps({"error": f"arguments of {name} are not a JSON object: {raw!r:.200}"})
            else:
                result = call(name, args)
                res.calls.append({"name": name, "arguments": args, "result": result})
            messages.append({"role": "tool", "tool_call_id": tc.get("id", name), "name": name,
                             "content": result})
    else:
        res.stopped = "max_steps" if res.stopped == "answer" else res.stopped
    res.seconds = time.monotonic() - t0
    return res


@dataclass(frozen=True)
class AskSettings:
    """Where ``flowcept serve`` sends questions (its ``--ask-*`` options; ``flowcept ask``'s)."""
    base_url: str
    model: str
    api_key: Optional[str] = None
    max_steps: int = 6
    max_tool_calls: int = 8
    timeout: float = 120.0
    max_tokens: int = 512


def answer(settings: AskSettings, question: str, call: Callable[[str, Dict[str, Any]], str],
           source: Optional[str] = None) -> dict:
    """One question answered as JSON: the answer, the tool calls it ran (name, arguments,
    result text), steps, seconds and why it stopped.  ``source`` is given to every tool
    call that names none."""
    def run_tool(name: str, args: Dict[str, Any]) -> str:
        return call(name, {**args, "source": args.get("source") or source} if source else args)
    res = ask(question, run_tool, settings.base_url, settings.model, api_key=settings.api_key,
              max_steps=settings.max_steps, max_tool_calls=settings.max_tool_calls,
              timeout=settings.timeout, max_tokens=settings.max_tokens)
    return {"question": question, "answer": res.answer, "calls": res.calls, "steps": res.steps,
            "seconds": res.seconds, "stopped": res.stopped, "model": settings.model}
