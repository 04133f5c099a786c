"""Type-checks Grafana dashboards against the @grafana/schema TypeScript types
(Grafana itself is not installable here): npm packages in a cache dir outside the
repository, one .ts file per dashboard, `tsc --noEmit --strict`."""
import json
import os
import shutil
import subprocess

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "flowcept", "grafana-check")
PACKAGES = ["@grafana/schema", "typescript@5"]


def ensure_toolchain():
    """(cache dir, None) or (None, why not)."""
    if not shutil.which("npm") or not shutil.which("node"):
        return None, "node/npm are not installed (apt-get install -y nodejs npm)"
    tsc = os.path.join(CACHE, "node_modules", "typescript", "bin", "tsc")
    schema = os.path.join(CACHE, "node_modules", "@grafana", "schema", "package.json")
    if not (os.path.exists(tsc) and os.path.exists(schema)):
        os.makedirs(CACHE, exist_ok=True)
        try:
            subprocess.run(["npm", "i", "--silent", "--no-audit", "--no-fund", *PACKAGES], cwd=CACHE,
                           check=True, timeout=600, capture_output=True)
        except (subprocess.SubprocessError, OSError) as e:
            return None, f"cannot npm install {' '.join(PACKAGES)} into {CACHE}: {e}"
    return CACHE, None


def typecheck(dashboards: dict, workdir: str):
    """dashboards: name -> dict.  Returns (returncode, compiler output)."""
    os.makedirs(workdir, exist_ok=True)
    files = []
    for name, doc in dashboards.items():
        path = os.path.join(workdir, f"{name}.ts")
        with open(path, "w") as f:
            f.write('import { Dashboard } from "@grafana/schema";\n'
                    f"export const dashboard: Dashboard = {json.dumps(doc, indent=1)};\n")
        files.append(path)
    with open(os.path.join(workdir, "tsconfig.json"), "w") as f:
        json.dump({"compilerOptions": {"strict": True, "noEmit": True, "skipLibCheck": True,
                                       "moduleResolution": "node", "module": "commonjs", "target": "es2020",
                                       "baseUrl": ".", "types": [],
                                       "paths": {"@grafana/schema": [os.path.join(
                                           CACHE, "node_modules", "@grafana", "schema")]}},
                   "files": files}, f)
    tsc = os.path.join(CACHE, "node_modules", "typescript", "bin", "tsc")
    r = subprocess.run(["node", tsc, "-p", os.path.join(workdir, "tsconfig.json")], cwd=CACHE,
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


# -- PromQL of the dashboards ---------------------------------------------------------------------
TEMPLATE_VALUES = {"$job": ".*", "$store": ".*", "$__rate_interval": "1m", "$__interval": "15s"}


def panel_expressions(dashboard: dict):
    """(panel title, PromQL) of every Prometheus target and query variable, with
    the template variables expanded as Grafana would for "All"."""
    out = []
    for p in dashboard.get("panels", []):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((p.get("title", "?"), expand(t["expr"])))
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, str) and q.startswith("label_values("):
            inner = q[len("label_values("):-1].rsplit(",", 1)[0]   # the series selector it reads
            out.append((f"variable {v['name']}", expand(inner)))
    return out


def expand(expr: str) -> str:
    for k, v in TEMPLATE_VALUES.items():
        expr = expr.replace(k, v)
    return expr


def promtool_check(exprs, workdir: str, promtool: str = "promtool"):
    """Runs `promtool check rules` on a rules file holding each expression as a
    recording rule; (returncode, output)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "panels.rules.yml")
    with open(path, "w") as f:
        f.write("groups:\n  - name: dashboard_panels\n    rules:\n")
        for k, e in enumerate(exprs):
            f.write(f"      - record: flowcept:panel_{k}\n        expr: {json.dumps(e)}\n")
    r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr
