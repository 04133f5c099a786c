"""``flowcept serve | query | mcp | ask | export | metrics`` (picked up by flowcept.cli)."""
from __future__ import annotations

import argparse
import csv
import json
import sys

SPEC_HELP = ("what to read: run/job/store directories, .h5 archives (flowcept compact), a directory "
             "of archives, or a store URL (a store backend registered for its scheme)")


def _access(specs, args):
    from flowcept.access.core import Access
    if not specs:
        from flowcept.config import load_config
        specs = [load_config().run_dir]
    return Access(specs, query_timeout=getattr(args, "query_timeout", 10.0),
                  max_limit=getattr(args, "max_limit", None) or 10_000,
                  cache_dir=getattr(args, "cache_dir", None))


def _read_secret(path):
    if not path:
        return None
    with open(path) as f:
        text = f.read().strip()
    if not text:
        raise ValueError(f"{path} is empty: put the token in it")
    return text


# -- serve -------------------------------------------------------------------------------------
def _cmd_serve(args) -> int:
    from flowcept.access.service import check_bind, serve
    token = _read_secret(args.token_file)
    check_bind(args.host, token)       # refused before anything is opened or printed
    ask = None
    if args.ask_base_url or args.ask_model:
        from flowcept.access.agent import AskSettings
        if not (args.ask_base_url and args.ask_model):
            raise ValueError("the Ask box needs both --ask-base-url URL and --ask-model NAME")
        ask = AskSettings(args.ask_base_url, args.ask_model, _read_secret(args.ask_api_key_file),
                          max_steps=args.ask_max_steps, max_tokens=args.ask_max_tokens,
                          timeout=args.ask_timeout)
    access = _access(args.specs, args)
    collector = None
    if args.metrics:
        from flowcept.access.metrics import FlowceptCollector
        collector = FlowceptCollector(stores=[s for s in args.specs if "://" not in s and not s.endswith(".h5")])
    print(f"flowcept serve: {', '.join(access.sources)} on http://{args.host}:{args.port} "
          f"(browser UI: /ui/, OpenAPI: /openapi.json, docs: /docs)", file=sys.stderr, flush=True)
    try:
        serve(access, args.host, args.port, token=token, max_concurrency=args.max_concurrency,
              metrics_collector=collector, ask=ask)
    finally:
        access.close()
    return 0


# -- query -------------------------------------------------------------------------------------
def _cmd_query(args) -> int:
    """Pages are answered whole; ``--all`` streams: documents are written
    block by block as the engine hands them out, never held all at once."""
    from flowcept.query.documents import dumps_lines
    access = _access(args.specs, args)
    out = sys.stdout
    try:
        if args.all and args.format == "jsonl":   # written from the columns (C): dumps_lines' bytes
            chunks = access.iter_json(args.source, args.filter, args.projection, args.sort, None,
                                      max_stream=None)
            parts, total = [], None
        elif args.all:
            parts = access.iter_pages(args.source, args.filter, args.projection, args.sort, None,
                                      max_stream=None)
            total = None
        else:   # the table says "N of total": it counts; the other formats do not
            page = access.tasks(args.source, args.filter, args.projection, args.sort, args.limit,
                                count=args.format == "table")
            parts, total = [page["items"]], page["total"]
            chunks = (dumps_lines(p) for p in parts)
        if args.format == "jsonl":
            out.flush()
            raw = out.buffer
            for text in chunks:
                raw.write(text)
            raw.flush()
        elif args.format == "json":
            out.write("[")
            first = True
            for part in parts:
                for d in part:
                    out.write(("\n" if first else ",\n") + json.dumps(jsonable(d)))
                    first = False
            out.write("\n]\n" if not first else "]\n")
        else:
            from flowcept.access.core import TABLE_COLUMNS, parse_projection, table_row
            cols = parse_projection(args.projection) or list(TABLE_COLUMNS)
            if args.format == "csv":
                w = csv.writer(out)
                w.writerow(cols)
                for part in parts:
                    w.writerows(table_row(jsonable(d), cols) for d in part)
            else:
                items = [jsonable(d) for part in parts for d in part]
                rows = [table_row(d, cols) for d in items]
                text = [[str(x) if not isinstance(x, float) else f"{x:.6f}" for x in r] for r in rows]
                widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(cols)]
                out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip() + "\n")
                for r in text:
                    out.write("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() + "\n")
                if total is not None and total > len(items):
                    print(f"({len(items)} of {total} shown; --limit N or --all for more)", file=sys.stderr)
    finally:
        access.close()
    return 0


def jsonable(d):
    from flowcept.query.documents import jsonable as _j
    return _j(d)


# -- mcp, ask ------------------------------------------------------------------------------------
def _cmd_mcp(args) -> int:
    from flowcept.access.mcp_server import run
    access = _access(args.specs, args)
    try:
        run(access, args.transport, args.host, args.port)
    finally:
        access.close()
    return 0


def _cmd_ask(args) -> int:
    from flowcept.access.agent import AgentError, ask
    from flowcept.access.tools import call_tool
    key = _read_secret(args.api_key_file)
    access = _access(args.run, args)
    try:
        res = ask(args.question, lambda n, a: call_tool(access, n, a), args.base_url, args.model,
                  api_key=key, max_steps=args.max_steps, max_tool_calls=args.max_tool_calls,
                  timeout=args.timeout, max_tokens=args.max_tokens)
    except AgentError as e:
        print(f"flowcept ask: error: {e}", file=sys.stderr)
        return 2
    finally:
        access.close()
    if args.json:
        print(json.dumps({"answer": res.answer, "calls": res.calls, "steps": res.steps,
                          "seconds": res.seconds, "stopped": res.stopped}, indent=1))
    else:
        print(res.describe())
    return 0


# -- export, metrics -----------------------------------------------------------------------------
def _cmd_export(args) -> int:
    budget = args.query_timeout or None
    if args.format == "perfetto":
        from flowcept.access.perfetto import export_perfetto
        out = export_perfetto(args.path, args.output, budget=budget)
        print(f"wrote {out} (open it in https://ui.perfetto.dev)")
        return 0
    if args.format == "parquet":
        from flowcept.access.parquet import export_parquet
        out = export_parquet(args.path, args.output, payload=args.payload, budget=budget)
        print(f"wrote {out} (pandas.read_parquet, polars.read_parquet, duckdb: SELECT * FROM '{out}')")
        return 0
    fmt = args.format.split("-", 1)[1]
    from flowcept.access.prov_export import export_prov
    out = export_prov(args.path, args.output, fmt, workflow=args.workflow, budget=budget,
                      cache_dir=args.cache_dir)
    if out is not None:
        print(f"wrote {out}")
    return 0


def _cmd_metrics(args) -> int:
    import signal
    import threading
    from flowcept.access.metrics import FlowceptCollector, run_exporter
    from flowcept.access.service import is_loopback
    if not is_loopback(args.host) and not args.public:
        raise ValueError(f"binding {args.host} publishes the metrics beyond this machine: add --public "
                         "to mean it")
    col = FlowceptCollector(stores=args.store or [], shm_dirs=args.shm_dir or [], spool_dirs=args.spool or [])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"flowcept metrics: http://{args.host}:{args.port}/metrics", file=sys.stderr, flush=True)
    run_exporter(col, args.port, args.host, stop)
    return 0


# -- registration ----------------------------------------------------------------------------------
def _limits(p):
    p.add_argument("--query-timeout", type=float, default=10.0, metavar="S",
                   help="time budget of one query in seconds, wall clock and CPU (default 10; 0: "
                        "none, e.g. for a large --all or export)")
    p.add_argument("--cache-dir", default=None,
                   help="where PROV export of a store keeps its compacted archive (default: none; "
                        "PROV then needs an archive)")


def register(sub) -> None:
    F = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("serve", help="HTTP JSON query service over stores and archives",
                       formatter_class=F,
                       description="Serves tasks (Mongo-style filter, projection, sort, limit, cursor), "
                                   "workflows, lineage, statistics and PROV over HTTP, read-only, and a "
                                   "browser UI over them at /ui/ (runs, timelines, tasks, lineage).\n"
                                   "OpenAPI document at /openapi.json.  Binds 127.0.0.1 unless --host; any "
                                   "other address needs --token-file.\n\n"
                                   "  flowcept serve ./flowcept-runs/12345 job.h5 --port 8008\n"
                                   "  curl -g 'http://127.0.0.1:8008/api/v1/tasks?source=job&filter={\"status\":\"ERROR\"}'\n\n"
                                   "(curl -g: the filter's braces are not URL globs; source= picks one of "
                                   "several PATHs, named as /api/v1/sources lists them)")
    p.add_argument("specs", nargs="*", metavar="PATH", help=SPEC_HELP + " (default: config run_dir)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8008, help="port (default 8008)")
    p.add_argument("--token-file", default=None,
                   help="file holding a bearer token clients must send (Authorization: Bearer ...)")
    p.add_argument("--max-limit", type=int, default=10_000, help="largest page size (default 10000)")
    p.add_argument("--max-concurrency", type=int, default=4, help="queries run at once (default 4)")
    p.add_argument("--metrics", action="store_true", help="also serve Prometheus /metrics of the stores")
    p.add_argument("--ask-base-url", default=None, metavar="URL",
                   help="OpenAI-compatible chat endpoint for the UI's Ask box and POST /api/v1/ask, as "
                        "flowcept ask --base-url (e.g. http://127.0.0.1:11434/v1); without it there is no "
                        "Ask box")
    p.add_argument("--ask-model", default=None, metavar="NAME", help="model name the endpoint knows")
    p.add_argument("--ask-api-key-file", default=None, metavar="FILE",
                   help="file holding the endpoint's API key, if any")
    p.add_argument("--ask-max-steps", type=int, default=6, help="model calls per question at most (default 6)")
    p.add_argument("--ask-max-tokens", type=int, default=512, help="tokens per model answer (default 512)")
    p.add_argument("--ask-timeout", type=float, default=120.0, help="seconds per model call (default 120)")
    _limits(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("query", help="query tasks: filter, projection, sort, limit; table, JSON lines, CSV",
                       formatter_class=F,
                       description="Prints the tasks matching a Mongo-style filter, the same answers "
                                   "as the query service.\n\n"
                                   "  flowcept query RUN --filter '{\"activity_id\": \"train\"}' --sort -ended_at\n"
                                   "  flowcept query job.h5 -f '{\"rank\": {\"$in\": [0, 1]}}' --format csv --all")
    p.add_argument("specs", nargs="*", metavar="PATH", help=SPEC_HELP + " (default: config run_dir)")
    p.add_argument("-f", "--filter", default=None, help="Mongo-style filter as JSON (default: every task)")
    p.add_argument("-p", "--projection", default=None, help="fields to show, comma-separated")
    p.add_argument("-s", "--sort", default=None, help="sort fields, comma-separated, -field descending, "
                                                      "written --sort=-field "
                                                      "(default start time)")
    p.add_argument("-n", "--limit", type=int, default=100, help="at most N tasks (default 100, max 10000)")
    p.add_argument("--all", action="store_true", help="every match (no page limit)")
    p.add_argument("--format", choices=("table", "jsonl", "json", "csv"), default="table")
    p.add_argument("--source", default=None, help="which source, when several PATHs are given")
    _limits(p)
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("mcp", help="MCP server: the query tools for MCP-capable assistants",
                       description="Serves find_tasks, get_task, workflow_summary, lineage, statistics "
                                   "and failures over the Model Context Protocol (stdio, or streamable "
                                   "HTTP at http://HOST:PORT/mcp).  Read-only.")
    p.add_argument("specs", nargs="*", metavar="PATH", help=SPEC_HELP + " (default: config run_dir)")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8009)
    _limits(p)
    p.set_defaults(func=_cmd_mcp)

    p = sub.add_parser("ask", help="ask a question about a run (LLM agent over the query tools)",
                       formatter_class=F,
                       description="Sends the question and the query tools to an OpenAI-compatible chat "
                                   "endpoint, runs the tool calls it returns (read-only, bounded) and "
                                   "prints the answer with the queries it ran.\n\n"
                                   "  flowcept ask 'which tasks failed on rank 3?' --run job.h5 \\\n"
                                   "      --base-url http://127.0.0.1:11434/v1 --model llama3.2")
    p.add_argument("question")
    p.add_argument("--run", action="append", default=None, metavar="PATH",
                   help=SPEC_HELP + "; repeatable (default: config run_dir)")
    p.add_argument("--base-url", default="http://127.0.0.1:11434/v1",
                   help="OpenAI-compatible API base (default: Ollama on this machine)")
    p.add_argument("--model", default="llama3.2", help="model name the endpoint knows")
    p.add_argument("--api-key-file", default=None, help="file holding the endpoint's API key, if any")
    p.add_argument("--max-steps", type=int, default=6, help="model calls at most (default 6)")
    p.add_argument("--max-tool-calls", type=int, default=8, help="tool runs at most (default 8)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per model answer (default 512)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per model call (default 120)")
    p.add_argument("--json", action="store_true", help="print the answer and calls as JSON")
    _limits(p)
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("export", help="export a run as Parquet, a Perfetto trace or a PROV document",
                       formatter_class=F,
                       description="parquet: one row per task with the task documents' field names "
                                   "(payload fields as JSON text), for pandas, Polars and DuckDB "
                                   "(needs the parquet extra).  perfetto: Chrome/Perfetto trace JSON, "
                                   "one track per rank and thread (open in https://ui.perfetto.dev; "
                                   "name the output .gz to gzip it).  prov-json / prov-provn / "
                                   "prov-xml / prov-rdf: W3C PROV (all but JSON need the prov extra).\n"
                                   "Streamed, with a progress bar on a terminal.\n\n"
                                   "  flowcept export --format parquet job.h5 -o job.parquet\n"
                                   "  flowcept export --format perfetto job.h5 -o job.trace.json.gz")
    p.add_argument("path", help="archive (.h5), run/store directory or store URL")
    p.add_argument("--format", required=True,
                   choices=("parquet", "perfetto", "prov-json", "prov-provn", "prov-xml", "prov-rdf"))
    p.add_argument("-o", "--output", default=None, help="output file (parquet default: NAME.parquet; "
                                                        "perfetto default: NAME.trace.json; "
                                                        "PROV default: stdout)")
    p.add_argument("--workflow", default=None, help="PROV of one workflow id only")
    p.add_argument("--payload", choices=("json", "none"), default="json",
                   help="parquet: used/generated/tags/custom_metadata/error as JSON text (default) "
                        "or left out")
    p.add_argument("--query-timeout", type=float, default=0.0, metavar="S",
                   help="stop an export that takes longer than S seconds, wall clock or CPU "
                        "(default 0: no limit)")
    p.add_argument("--cache-dir", default=None,
                   help="where PROV export of a store keeps its compacted archive (default: a "
                        "temporary directory)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("metrics", help="Prometheus exporter of stores, keepers, rings and spools",
                       description="Serves /metrics (Prometheus text format): records and tasks stored "
                                   "(by activity and status), failed tasks, keeper counters and "
                                   "quarantine, ring captured/spilled/dropped and leader lag, spool "
                                   "depth.  Read on every scrape; see grafana/ for dashboards.")
    p.add_argument("--store", action="append", metavar="DIR", help="store or run directory (repeatable)")
    p.add_argument("--shm-dir", action="append", metavar="DIR", help="where rings live (repeatable)")
    p.add_argument("--spool", action="append", metavar="DIR", help="spool directory (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9464)
    p.add_argument("--public", action="store_true", help="allow binding a non-loopback address")
    p.set_defaults(func=_cmd_metrics)


def main(argv=None) -> int:
    """``python -m flowcept.access.cli COMMAND ...``: these commands alone (the same
    as ``flowcept COMMAND`` once flowcept.cli registers this module)."""
    ap = argparse.ArgumentParser(prog="flowcept", description="flowcept access commands")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = ap.parse_args(argv)
    from flowcept.config import ConfigError
    from flowcept.query.limits import QueryTimeout
    try:
        return args.func(args) or 0
    except (ConfigError, FileNotFoundError, PermissionError, ValueError, ImportError) as e:
        print(f"flowcept {args.command}: error: {e}", file=sys.stderr)
        return 2
    except QueryTimeout as e:
        print(f"flowcept {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
