"""How well does `flowcept ask` answer questions about a run?  30 questions with
known answers over a demo run (4-rank MPI heat2d + the pipeline app with one
failure), asked through an OpenAI-compatible endpoint; an answer scores when it
contains the expected value.  The known answers come from the query layer itself.

    python benchmarks/bench_agent.py --base-url http://127.0.0.1:11434/v1 --model llama3.2
    python benchmarks/bench_agent.py --local-smollm2      # SmolLM2-135M via tests/support

Prints one line per question and the score; --json writes the details.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_run(base):
    runs = os.path.join(base, "runs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWCEPT_")}
    env.pop("SLURM_JOB_ID", None)
    env["FLOWCEPT_SHM_DIR"] = os.path.join(base, "shm")
    os.makedirs(env["FLOWCEPT_SHM_DIR"], exist_ok=True)
    subprocess.run(["mpiexec", "-n", "4", sys.executable, os.path.join(ROOT, "examples", "heat2d.py"),
                    "--steps", "10", "--n", "64", "--run-dir", runs], check=True, timeout=180, env=env,
                   cwd=base, capture_output=True)
    env["FLOWCEPT_RUN_DIR"] = runs
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "archive", "pipeline_app.py")], check=True,
                   timeout=60, env=env, capture_output=True)
    from flowcept.archive.compact import compact
    h5 = os.path.join(base, "demo.h5")
    compact(runs, h5, progress=False)
    return h5


def questions(a):
    """(question, expected answer text) pairs, the answers computed from the run."""
    qs = []
    summ = a.workflow_summary()
    qs.append(("How many tasks are in this run in total?", str(summ["tasks"])))
    qs.append(("How many tasks failed?", str(summ["by_status"].get("ERROR", 0))))
    qs.append(("Which activity failed?", a.failures()["items"][0]["activity_id"]))
    qs.append(("On which rank did the failed task run?", str(a.failures()["items"][0]["rank"])))
    err = a.failures()["items"][0]
    qs.append(("What was the error message of the failed task?", err["error"]["message"]))
    qs.append(("What input did the failed task use?", err["used"]["model"]))
    qs.append(("How many ranks took part?", str(len(summ["ranks"]))))
    qs.append(("How many workflows are in this run?", str(len(summ["workflows"]))))
    qs.append(("On which host did the run execute?", summ["hosts"][0]))
    for act, counts in list(summ["by_activity"].items())[:9]:
        qs.append((f"How many '{act}' tasks are there?", str(sum(counts.values()))))
    st = a.stats("activity")["items"]
    slowest = max(st, key=lambda r: r["max_s"])
    qs.append(("Which activity has the longest single task?", slowest["activity"]))
    most = max(st, key=lambda r: r["total_s"])
    qs.append(("Which activity took the most time in total?", most["activity"]))
    ranks = a.stats("rank")["items"]
    for r in ranks:
        qs.append((f"How many tasks ran on rank {r['rank']}?", str(r["count"])))
    tr = a.tasks(None, {"activity_id": "train"}, limit=10)["items"]
    qs.append(("What did the train tasks generate? Name one model.", tr[0]["generated"]["return"]
               if "return" in tr[0].get("generated", {}) else json.dumps(tr[0].get("generated"))))
    make = a.tasks(None, {"activity_id": "make"}, limit=1)["items"][0]
    desc = a.lineage(make["task_id"], "descendants")
    qs.append((f"How many tasks depend on task {make['task_id']}?", str(desc["count"])))
    anc = a.lineage(err["task_id"], "ancestors")
    qs.append((f"How many ancestors does task {err['task_id']} have?", str(anc["count"])))
    tags = a.tasks(None, {"tags": "ml"}, limit=1)["total"]
    qs.append(("How many tasks are tagged 'ml'?", str(tags)))
    ev = [r for r in st if r["activity"] == "evaluate"][0]
    qs.append(("How many evaluate tasks succeeded?", str(ev["count"] - ev["errors"])))
    qs.append(("Did any task fail on rank 3? Answer yes or no.",
               "yes" if a.failures(filter={"rank": 3})["total"] else "no"))
    return qs[:30]


def score(answer, expected):
    a, e = answer.lower(), expected.lower()
    if re.fullmatch(r"\d+", e):
        return re.search(rf"(?<![\d.]){re.escape(e)}(?![\d.])", a) is not None
    return e in a


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--model", default="llama3.2")
    ap.add_argument("--api-key-file", default=None)
    ap.add_argument("--local-smollm2", action="store_true", help="start SmolLM2-135M via tests/support")
    ap.add_argument("-n", type=int, default=30, help="ask only the first N questions")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", default=None, help="write the details here")
    args = ap.parse_args()
    from flowcept.access.agent import AgentError, ask
    from flowcept.access.core import Access
    from flowcept.access.tools import call_tool
    endpoint = None
    if args.local_smollm2:
        sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
        from llm_endpoint import Endpoint, ensure_shim, free_port, model_path
        model, why = model_path()
        shim, why2 = ensure_shim()
        if model is None or shim is None:
            sys.exit(f"bench_agent: {why or why2}")
        endpoint = Endpoint(shim, model, free_port())
        args.base_url, args.model = endpoint.base_url, "SmolLM2-135M-Instruct.Q4_1"
    if not args.base_url:
        sys.exit("bench_agent: pass --base-url (an OpenAI-compatible endpoint) or --local-smollm2")
    key = open(args.api_key_file).read().strip() if args.api_key_file else None
    rows = []
    with tempfile.TemporaryDirectory() as base:
        h5 = demo_run(base)
        a = Access([h5])
        try:
            qs = questions(a)[:args.n]
            t0 = time.time()
            for q, want in qs:
                try:
                    res = ask(q, lambda n, x: call_tool(a, n, x), args.base_url, args.model, api_key=key,
                              max_tokens=args.max_tokens, timeout=300)
                    ans, calls = res.answer, [c["name"] for c in res.calls]
                except AgentError as e:
                    ans, calls = f"(error: {e})", []
                ok = score(ans, want)
                rows.append({"question": q, "expected": want, "answer": ans, "calls": calls, "ok": ok})
                print(f"{'PASS' if ok else 'fail'}  {q}  expected {want!r}; tools {calls}; "
                      f"answer {ans.strip()[:80]!r}", flush=True)
        finally:
            a.close()
            if endpoint is not None:
                endpoint.stop()
    n_ok = sum(r["ok"] for r in rows)
    print(f"score: {n_ok}/{len(rows)} ({100 * n_ok / max(1, len(rows)):.0f}%) with {args.model}, "
          f"{time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "score": n_ok, "of": len(rows), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
