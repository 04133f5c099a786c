"""Observe an MLflow tracking store: each ended run becomes one task record.

* run -> task: activity = the run name (``mlflow:<experiment>`` when it has
  none), start/end from the run, status FINISHED (FAILED and KILLED runs ->
  ERROR); the run id, experiment id and name, lifecycle stage and artifact
  URI in ``custom_metadata``;
* params -> ``used``; metrics -> ``generated`` (latest value of each) and
  ``custom_metadata["metric_history"]`` (every (step, timestamp, value));
* tags -> ``tags`` (a dict, ``mlflow.*`` system tags included);
* artifacts -> ``custom_metadata["artifacts"]`` (path, is_dir, size), listed
  through the REST API (the sqlite store holds no artifact index: there,
  files under a local ``file://`` artifact root are listed directly).

Two ways in, both read-only: the tracking server's REST API
(``tracking_uri="http://host:port"``, stdlib urllib, no MLflow needed in
this process) or the server's sqlite backend file
(``tracking_uri="sqlite:///path/mlflow.db"``, opened with ``mode=ro``).
Runs still RUNNING are emitted once they end.  Position: the ids of the
runs emitted, so a run is never emitted twice, however late it ends.

Flowcept's way: ``Flowcept("mlflow")`` without a configured tracking URI
watches the sqlite file named by the settings key
``adapters.mlflow.file_path`` (every ``watch_interval_sec``), waiting for
it to appear, and records each run as Flowcept 1.0.3 does: ``task_id`` the
run id, ``used`` the params, ``generated`` the metrics, ``status`` (and the
run's name as activity, its times, the workflow's ids), without our
``tags`` and ``custom_metadata`` (``details``, on by default for
``flowcept observe mlflow``).  The object also answers Flowcept's
interceptor API: ``settings`` (``file_path``, ``watch_interval_sec``, ...),
``dao`` (``get_finished_run_uuids()``, ``get_run_data(run_id)``) and
``state_manager`` (the set of runs seen; ``reset()`` empties that set, never
the adapter's checkpoint, so no run is emitted twice).
"""
from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from flowcept.adapters.base import Adapter, Item
from flowcept.errors import ConfigError
from flowcept.record.layout import STATUS_ERROR, STATUS_FINISHED

from flowcept.config import Option

# settings keys <adapter>_<name> (file, FLOWCEPT_* environment, Flowcept(...) keywords)
OPTIONS = (
    Option("tracking_uri", str, "", "http(s)://host:port of a tracking server, or sqlite:///path/mlflow.db"),
    Option("poll_interval", float, 2.0, "seconds between passes", range=(0, 86400)),
    Option("checkpoint", str, "", "checkpoint file (\"\" = <run_dir>/adapters/mlflow-<hash>.json)"),
    Option("details", bool, True, "tags and custom_metadata (metric history, artifacts) besides Flowcept's fields"),
)

_ENDED = {"FINISHED": STATUS_FINISHED, "FAILED": STATUS_ERROR, "KILLED": STATUS_ERROR}


class MlflowAdapter(Adapter):
    name = "mlflow"
    default_poll_interval = 2.0

    def __init__(self, session=None, *, tracking_uri: str, experiment_ids: Optional[List[str]] = None,
                 timeout_s: float = 30.0, details: bool = True, wait_for_store: bool = False,
                 settings: Optional["MLFlowSettings"] = None, **kw):
        super().__init__(session, **kw)
        self.details = bool(details)
        self.wait_for_store = wait_for_store
        if tracking_uri.startswith("sqlite:///"):
            self.kind = "sqlite"
            self.db_path = os.path.abspath(tracking_uri[len("sqlite:///"):])
        elif tracking_uri.startswith(("http://", "https://")):
            self.kind = "rest"
            self.db_path = None
        else:
            raise ConfigError(f"mlflow adapter: tracking URI {tracking_uri!r} is neither "
                              "http(s)://host:port nor sqlite:///path/to/mlflow.db")
        self.tracking_uri = tracking_uri.rstrip("/")
        self.experiment_ids = [str(e) for e in experiment_ids] if experiment_ids else None
        self.timeout_s = timeout_s
        self._conn = None
        self.settings = settings or MLFlowSettings(file_path=self.db_path or self.tracking_uri,
                                                   watch_interval_sec=self.poll_interval)
        self.dao = MLFlowDAO(self.db_path) if self.db_path else None
        self.state_manager = RunStateManager(self)

    @classmethod
    def from_session(cls, session, **options: Any) -> "MlflowAdapter":
        """Options from the configuration (``mlflow_*`` keys); without a
        tracking URI, Flowcept's settings key ``adapters.mlflow.file_path``."""
        config = getattr(session, "config", None)
        if not options.get("tracking_uri") and not getattr(config, "mlflow_tracking_uri", ""):
            from flowcept.adapters import flowcept_settings
            section = (flowcept_settings().get("adapters") or {}).get("mlflow") or {}
            if not section.get("file_path"):
                raise ConfigError("mlflow adapter: no tracking store: set mlflow_tracking_uri "
                                  "(FLOWCEPT_MLFLOW_TRACKING_URI), or adapters.mlflow.file_path in "
                                  "Flowcept's settings.yaml")
            st = MLFlowSettings(**{k: v for k, v in section.items()
                                   if k in MLFlowSettings.__dataclass_fields__})
            options = {"tracking_uri": f"sqlite:///{os.path.abspath(st.file_path)}",
                       "poll_interval": float(st.watch_interval_sec), "details": False,
                       "wait_for_store": True, "settings": st, **options}
        return super().from_session(session, **options)

    def source_key(self) -> str:
        return f"mlflow:{self.db_path or self.tracking_uri}"

    def open(self) -> None:
        self.position.setdefault("runs", [])
        if self.kind == "sqlite":
            if not os.path.exists(self.db_path):
                if not self.wait_for_store:
                    raise ConfigError(f"mlflow adapter: no tracking database at {self.db_path}")
                return   # Flowcept's way: it appears when mlflow first writes
            self._connect()
        else:
            self._get("/api/2.0/mlflow/experiments/search?max_results=1")   # fail fast: reachable?

    def _connect(self) -> None:
        import sqlite3
        self._conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=1.0,
                                     isolation_level=None, check_same_thread=False)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- REST -------------------------------------------------------------
    def _get(self, path: str, params: Optional[dict] = None) -> dict:
        url = self.tracking_uri + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=self.timeout_s) as r:
            return json.loads(r.read() or b"{}")

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.tracking_uri + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
            return json.loads(r.read() or b"{}")

    def _rest_runs(self) -> Iterator[dict]:
        exps = self.experiment_ids
        names: Dict[str, str] = {}
        token = None
        while True:   # every experiment: names, and ids when none were given
            body = {"max_results": 1000, **({"page_token": token} if token else {})}
            page = self._post("/api/2.0/mlflow/experiments/search", body)
            for e in page.get("experiments", []):
                names[e["experiment_id"]] = e.get("name", "")
            token = page.get("next_page_token")
            if not token:
                break
        exps = exps or sorted(names)
        token = None
        while True:
            body = {"experiment_ids": exps, "max_results": 1000, "order_by": ["attributes.end_time ASC"],
                    **({"page_token": token} if token else {})}
            page = self._post("/api/2.0/mlflow/runs/search", body)
            for run in page.get("runs", []):
                info, data = run["info"], run.get("data", {})
                status = info.get("status")
                if status not in _ENDED or info["run_id"] in self._done:
                    continue
                history = {}
                for m in data.get("metrics", []):
                    h = self._get("/api/2.0/mlflow/metrics/get-history",
                                  {"run_id": info["run_id"], "metric_key": m["key"]})
                    history[m["key"]] = [[int(x.get("step", 0)), int(x["timestamp"]), x["value"]]
                                         for x in h.get("metrics", [])]
                yield {"run_id": info["run_id"], "name": info.get("run_name") or "",
                       "experiment_id": info["experiment_id"],
                       "experiment": names.get(info["experiment_id"], ""), "status": status,
                       "start": int(info.get("start_time") or 0), "end": int(info.get("end_time") or 0),
                       "lifecycle": info.get("lifecycle_stage"), "artifact_uri": info.get("artifact_uri"),
                       "params": {p["key"]: p["value"] for p in data.get("params", [])},
                       "tags": {t["key"]: t["value"] for t in data.get("tags", [])},
                       "history": history, "artifacts": self._rest_artifacts(info["run_id"])}
            token = page.get("next_page_token")
            if not token:
                return

    def _rest_artifacts(self, run_id: str, path: str = "", depth: int = 0) -> List[dict]:
        try:
            page = self._get("/api/2.0/mlflow/artifacts/list",
                             {"run_id": run_id, **({"path": path} if path else {})})
        except Exception:   # an artifact store the server cannot reach: list nothing
            return []
        out = []
        for f in page.get("files", []):
            out.append({"path": f["path"], "is_dir": bool(f.get("is_dir")),
                        "size": int(f.get("file_size", 0) or 0)})
            if f.get("is_dir") and depth < 4:
                out.extend(self._rest_artifacts(run_id, f["path"], depth + 1))
        return out

    # -- sqlite store -----------------------------------------------------
    def _sql_runs(self) -> Iterator[dict]:
        c = self._conn
        q = ("SELECT r.run_uuid, r.name, r.experiment_id, e.name, r.status, r.start_time, r.end_time, "
             "r.lifecycle_stage, r.artifact_uri FROM runs r JOIN experiments e "
             "ON e.experiment_id = r.experiment_id WHERE r.status IN ('FINISHED','FAILED','KILLED') "
             "ORDER BY r.end_time, r.run_uuid")
        rows = [r for r in c.execute(q).fetchall() if r[0] not in self._done]
        if self.experiment_ids:
            rows = [r for r in rows if str(r[2]) in self.experiment_ids]
        for (rid, name, eid, ename, status, start, end, stage, art) in rows:
            params = dict(c.execute("SELECT key, value FROM params WHERE run_uuid=?", (rid,)).fetchall())
            tags = dict(c.execute("SELECT key, value FROM tags WHERE run_uuid=?", (rid,)).fetchall())
            history: Dict[str, list] = {}
            for key, step, ts, value in c.execute(
                    "SELECT key, step, timestamp, value FROM metrics WHERE run_uuid=? "
                    "ORDER BY key, step, timestamp", (rid,)).fetchall():
                history.setdefault(key, []).append([int(step), int(ts), value])
            yield {"run_id": rid, "name": name or "", "experiment_id": str(eid), "experiment": ename,
                   "status": status, "start": int(start or 0), "end": int(end or 0),
                   "lifecycle": stage, "artifact_uri": art, "params": params, "tags": tags,
                   "history": history, "artifacts": _local_artifacts(art)}

    # -- records ----------------------------------------------------------
    def read_new(self) -> Iterator[Item]:
        self._done = set(self.position["runs"])
        if self.kind == "sqlite" and self._conn is None:
            if not os.path.exists(self.db_path):
                return
            self._connect()
        if self.kind == "sqlite" and self.wait_for_store and not _has_runs_table(self._conn):
            return   # mlflow has not created its schema yet
        runs = self._sql_runs() if self.kind == "sqlite" else self._rest_runs()
        for run in list(runs):
            latest = {k: max(v, key=lambda x: (x[0], x[1]))[2] for k, v in run["history"].items() if v}
            meta = {"run_id": run["run_id"], "run_name": run["name"],
                    "experiment_id": run["experiment_id"], "experiment": run["experiment"],
                    "mlflow_status": run["status"], "lifecycle_stage": run["lifecycle"],
                    "artifact_uri": run["artifact_uri"], "metric_history": run["history"],
                    "artifacts": run["artifacts"]}
            start = run["start"] * 1_000_000
            end = (run["end"] or run["start"]) * 1_000_000
            yield Item(source_id=run["run_id"], activity=run["name"] or f"mlflow:{run['experiment']}",
                       start_ns=start, end_ns=end, status=_ENDED[run["status"]],
                       used=run["params"], generated=latest,
                       tags=run["tags"] if self.details else None,
                       custom_metadata=meta if self.details else {},
                       fields={"task_id": run["run_id"]},
                       advance=[["add", ["runs"], run["run_id"]]])


def _has_runs_table(conn) -> bool:
    try:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone() \
            is not None
    except Exception:   # a file mlflow is still creating
        return False


@dataclass
class MLFlowSettings:
    """Flowcept's ``adapters.mlflow`` settings."""
    key: str = "mlflow"
    kind: str = "mlflow"
    file_path: str = "mlflow.db"
    log_params: List[str] = field(default_factory=lambda: ["*"])
    log_metrics: List[str] = field(default_factory=lambda: ["*"])
    watch_interval_sec: float = 1
    observer_type: str = "file"
    observer_subtype: str = "sqlite"


@dataclass
class RunData:
    """Flowcept's ``RunData``: one finished run."""
    task_id: str
    start_time: int
    end_time: int
    used: dict
    generated: dict
    status: str


class MLFlowDAO:
    """Flowcept's MLflow DAO: read-only queries of a sqlite tracking store."""

    def __init__(self, db_path: str, limit: int = 10):
        self.db_path = db_path
        self.limit = limit

    def _query(self, sql: str, args=()) -> list:
        import sqlite3
        if not os.path.exists(self.db_path):
            return []
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5.0)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.Error:   # no schema yet
            return []
        finally:
            conn.close()

    def get_finished_run_uuids(self) -> List[tuple]:
        """The last finished runs (newest first), as 1-tuples (run id,)."""
        return self._query("SELECT run_uuid FROM runs WHERE status = 'FINISHED' "
                           "ORDER BY end_time DESC LIMIT ?", (self.limit,))

    def get_run_data(self, run_uuid: str) -> Optional[RunData]:
        """A finished run's params (used) and latest metrics (generated); None if it
        is not finished."""
        rows = self._query("SELECT start_time, end_time, status FROM runs WHERE run_uuid = ? "
                           "AND status = 'FINISHED'", (run_uuid,))
        if not rows:
            return None
        start, end, status = rows[0]
        used = dict(self._query("SELECT key, value FROM params WHERE run_uuid = ?", (run_uuid,)))
        generated = {}
        for key, value in self._query("SELECT key, value FROM metrics WHERE run_uuid = ? "
                                      "ORDER BY key, step, timestamp", (run_uuid,)):
            generated[key] = value
        return RunData(task_id=run_uuid, start_time=start, end_time=end, used=used,
                       generated=generated, status=status)


class RunStateManager:
    """Flowcept's interceptor state: the run ids seen (the ones the adapter
    emitted, and any added).  ``reset()`` forgets them here only: the
    adapter's checkpoint is its own, so no run is emitted twice."""

    def __init__(self, adapter: "MlflowAdapter"):
        self._adapter = adapter
        self._added: set = set()
        self._since = 0   # runs of the adapter's position before a reset() are not counted

    def _ids(self) -> set:
        runs = self._adapter.position.get("runs") or []
        return set(runs[self._since:]) | self._added

    def reset(self) -> None:
        self._added.clear()
        self._since = len(self._adapter.position.get("runs") or [])

    def count(self) -> int:
        return len(self._ids())

    def add_element_id(self, element_id: str) -> None:
        self._added.add(element_id)

    def has_element_id(self, element_id: str) -> bool:
        return element_id in self._ids()


def _local_artifacts(uri: Optional[str]) -> List[dict]:
    """Files under a local artifact root (file:// or a plain path)."""
    if not uri:
        return []
    path = urllib.parse.urlparse(uri).path if uri.startswith("file:") else uri
    if not os.path.isdir(path):
        return []
    out = []
    for d, dirs, files in os.walk(path):
        dirs.sort()
        rel = os.path.relpath(d, path)
        for name in sorted(dirs):
            out.append({"path": os.path.normpath(os.path.join(rel, name)), "is_dir": True, "size": 0})
        for name in sorted(files):
            p = os.path.join(d, name)
            out.append({"path": os.path.normpath(os.path.join(rel, name)), "is_dir": False,
                        "size": os.path.getsize(p)})
    return sorted(out, key=lambda f: f["path"])
