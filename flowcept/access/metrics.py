"""Live metrics in the Prometheus text format (prometheus-client).

:class:`FlowceptCollector` reads, on every scrape, what the running parts
leave where it can see them, and needs nothing from them:

* store directories (``--store``, run dirs included): records and batches
  stored, tasks by activity and status, failed tasks -- counted once per
  batch key (batches never change), so a scrape reads only new batches;
* keeper status files ``keeper-*.status.json`` there (flowcept.keeper.read_status):
  batches/records in, duplicates skipped (redeliveries), rejected, store and
  transport errors, quarantined batches, whether each keeper runs;
* ring files under ``--shm-dir`` (``*.ring``, opened for their header only):
  records captured, spilled, dropped and torn, and the ring backlog in bytes
  (head - tail: what the leader has not drained yet, its lag);
* spool directories (``--spool``, ``*.batch`` files): spool depth;
* leader status files ``<shm_dir>/flowcept-<uid>/.leaders/*.json``
  (flowcept.node.status): records and batches each node leader drained,
  whichever process it runs in; and Drainers of this process passed to
  :meth:`add_drainer`.

Rates ("records per second") are Prometheus ``rate()`` of the ``_total``
counters; the dashboards in grafana/ do that.
"""
from __future__ import annotations

import glob
import os
import struct
import threading
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence


UNKNOWN_JOB = "?"
SHARED_JOBS = "*"


def job_label(job_id: int, names: Dict[int, str]) -> str:
    """The ``job`` label of a batch's 64-bit job id: the job's name where one
    is known (a run directory, a ring directory, a leader status), the number
    itself for numeric (SLURM) ids, else ``#<hex>`` of the name's hash."""
    name = names.get(job_id)
    if name is not None:
        return name
    return str(job_id) if job_id < 1 << 63 else f"#{job_id:016x}"


def _path_names(path: str) -> List[str]:
    return [p for p in os.path.abspath(path).split(os.sep) if p and p not in (".", "..")]


class FlowceptCollector:
    """Every metric carries a ``job`` label (the batch system's job, see
    :func:`job_label`); the Prometheus configuration in grafana/ keeps it with
    ``honor_labels: true``, as for a Pushgateway."""

    def __init__(self, stores: Sequence[str] = (), shm_dirs: Sequence[str] = (),
                 spool_dirs: Sequence[str] = ()):
        self.stores = list(stores)
        self.shm_dirs = list(shm_dirs)
        self.spool_dirs = list(spool_dirs)
        self.drainers: Dict[str, object] = {}
        self._seen: Dict[str, Dict[bytes, tuple]] = {}   # store path -> batch key -> counts
        self._names: Dict[int, str] = {}                 # job id -> job name, as learnt
        self._lock = threading.Lock()
        self._registry = None

    @property
    def registry(self):
        if self._registry is None:
            from prometheus_client import CollectorRegistry
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(self)
        return self._registry

    def add_drainer(self, name: str, drainer) -> None:
        """A leader in this process (e.g. ``flowcept drain --metrics-port``): its
        Drainer's records/batches counters are exported beside the leaders
        that publish status files (flowcept.node.status)."""
        self.drainers[name] = drainer

    def _learn(self, name: str) -> None:
        from flowcept.record.job import job_id_of
        self._names.setdefault(job_id_of(name), name)

    # -- reading ------------------------------------------------------------------------------
    def _store_counts(self, store_path: str):
        """{job id: (records, batches, Counter[(activity, status)])} of one store
        dir, read incrementally (a batch is read once)."""
        import numpy as np
        from flowcept.native.batch import Batch
        from flowcept.record.layout import FLAG_WORKFLOW, STATUS_NAMES
        from flowcept.store import open_store_at
        seen = self._seen.setdefault(store_path, {})
        with open_store_at(store_path) as st:
            new = [bytes(k) for k, _s in st.summaries() if bytes(k) not in seen]
            for key, frame in st.scan(keys=new) if new else ():
                b = Batch(frame, check=False)
                r = b.records
                tasks = r[(r["flags"] & FLAG_WORKFLOW) == 0]
                table = np.array(b.strings + [""], dtype=object)
                acts = table[np.minimum(tasks["activity_id"], len(table) - 1)]
                c = Counter(zip(acts.tolist(), (STATUS_NAMES.get(int(s), str(int(s)))
                                                for s in tasks["status"].tolist())))
                seen[bytes(key)] = (int(b.header["job_id"]), len(tasks), c)
        per: Dict[int, list] = {}
        for jid, n, c in seen.values():
            row = per.setdefault(jid, [0, 0, Counter()])
            row[0] += n
            row[1] += 1
            row[2].update(c)
        return per

    def _rings(self) -> List[tuple]:
        from flowcept.native.ring import Ring, RingError
        out = []
        for d in self.shm_dirs:
            for path in sorted(glob.glob(os.path.join(d, "**", "*.ring"), recursive=True)):
                try:
                    ring = Ring.open(path)
                except (RingError, OSError):
                    continue
                try:
                    out.append((path, ring.stats()))
                finally:
                    ring.close()
        return out

    # -- prometheus-client collector protocol -------------------------------------------------
    def describe(self):
        return []

    def collect(self):
        with self._lock:
            yield from self._collect()

    def _collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from flowcept.native.batch import unpack_batch_key
        from flowcept.node.status import read_statuses
        from flowcept.query.tasks import find_stores
        t0 = time.perf_counter()
        n_err = Counter()
        # what names the jobs have: ring directories and leader statuses first, then store paths
        try:
            rings = self._rings()
        except Exception:
            rings = []
            n_err["rings"] += 1
        for path, _s in rings:
            self._learn(os.path.basename(os.path.dirname(path)))
        leaders = [doc for d in self.shm_dirs for doc in read_statuses(d)]
        for doc in leaders:
            if isinstance(doc.get("job"), str):
                self._learn(doc["job"])
        stores = []
        for top in self.stores:
            try:
                paths = find_stores(top)
            except FileNotFoundError:
                paths = []
            for sp in paths:
                for name in _path_names(sp)[-4:]:
                    self._learn(name)
                stores.append((top, sp))

        S = ["store", "job"]
        rec = CounterMetricFamily("flowcept_records_stored", "task records in the store", labels=S)
        bat = CounterMetricFamily("flowcept_batches_stored", "batches in the store", labels=S)
        tasks = GaugeMetricFamily("flowcept_tasks", "stored tasks by activity and status",
                                  labels=S + ["activity", "status"])
        failed = GaugeMetricFamily("flowcept_tasks_failed", "stored tasks with status ERROR", labels=S)
        errors = GaugeMetricFamily("flowcept_exporter_errors", "sources the exporter could not read",
                                   labels=["what"])
        K = ["store", "keeper", "job"]
        keeper = {k: CounterMetricFamily(f"flowcept_keeper_{k}", doc, labels=K)
                  for k, doc in (("batches_in", "new batches stored by the keeper"),
                                 ("records_in", "new records stored by the keeper"),
                                 ("duplicates", "redelivered batches skipped (already stored)"),
                                 ("rejected", "batches quarantined"),
                                 ("acked", "entries acknowledged"),
                                 ("store_errors", "failed store commits (entries redelivered)"),
                                 ("transport_errors", "failed acknowledgements"))}
        krun = GaugeMetricFamily("flowcept_keeper_running", "1 while the keeper runs", labels=K)
        kage = GaugeMetricFamily("flowcept_keeper_status_age_seconds", "age of the keeper status file",
                                 labels=K)
        quar = GaugeMetricFamily("flowcept_quarantined_batches", "batches in the quarantine", labels=S)
        for top, sp in stores:
            label = os.path.relpath(sp, top) if sp != top else os.path.basename(sp.rstrip("/"))
            try:
                per = self._store_counts(sp)
            except Exception:   # a store being created or damaged: say so, keep scraping
                n_err["store"] += 1
                continue
            jobs = sorted(job_label(j, self._names) for j in per) or [UNKNOWN_JOB]
            for jid, (n, nb, c) in sorted(per.items()):
                lab = [label, job_label(jid, self._names)]
                rec.add_metric(lab, n)
                bat.add_metric(lab, nb)
                for (act, status), k in sorted(c.items()):
                    tasks.add_metric(lab + [act, status], k)
                failed.add_metric(lab, sum(k for (_a, s), k in c.items() if s == "ERROR"))
            if glob.glob(os.path.join(sp, "keeper-*.status.json")):
                try:
                    from flowcept.keeper import read_status
                    st = read_status(sp)
                except Exception:
                    n_err["keeper"] += 1
                    continue
                # a keeper's counters are per keeper, not per job: a store of one job's
                # batches names it, one shared by several jobs says SHARED_JOBS
                kjob = jobs[0] if len(jobs) == 1 else SHARED_JOBS
                quar.add_metric([label, kjob], st.get("quarantined", 0))
                for kd in st["keepers"]:
                    name = str(kd.get("name", "?"))
                    for k, fam in keeper.items():
                        fam.add_metric([label, name, kjob], float(kd.get(k, 0)))
                    krun.add_metric([label, name, kjob], 1.0 if kd.get("running") else 0.0)
                    kage.add_metric([label, name, kjob], max(0.0, time.time() - kd.get("updated", 0)))
        yield from (rec, bat, tasks, failed, *keeper.values(), krun, kage, quar)

        R = ["ring", "rank", "job"]
        cap = CounterMetricFamily("flowcept_ring_records_captured", "records pushed into the ring", labels=R)
        spill = CounterMetricFamily("flowcept_ring_spilled", "records spilled to the spill file", labels=R)
        drop = CounterMetricFamily("flowcept_ring_dropped", "records dropped (full ring, drop policy)",
                                   labels=R)
        torn = CounterMetricFamily("flowcept_ring_torn", "torn records found", labels=R)
        lag = GaugeMetricFamily("flowcept_leader_lag_bytes",
                                "ring bytes written but not yet drained by the leader", labels=R)
        nrings = GaugeMetricFamily("flowcept_rings", "ring files seen", labels=["shm_dir", "job"])
        per_dir: Counter = Counter()
        for path, s in rings:
            job = os.path.basename(os.path.dirname(path))
            lab = [os.path.basename(path), str(s.get("rank", "")), job]
            cap.add_metric(lab, s.get("pushed", 0))
            spill.add_metric(lab, s.get("spilled", 0))
            drop.add_metric(lab, s.get("dropped", 0))
            torn.add_metric(lab, s.get("torn", 0))
            lag.add_metric(lab, max(0, int(s.get("head", 0)) - int(s.get("tail", 0))))
            for d in self.shm_dirs:
                if path.startswith(os.path.join(d, "")):
                    per_dir[(d, job)] += 1
        for d in self.shm_dirs:
            if not any(k[0] == d for k in per_dir):
                nrings.add_metric([d, UNKNOWN_JOB], 0)
        for (d, job), k in sorted(per_dir.items()):
            nrings.add_metric([d, job], k)
        yield from (cap, spill, drop, torn, lag, nrings)

        sp_files = GaugeMetricFamily("flowcept_spool_batches", "batches waiting in the spool",
                                     labels=["spool", "job"])
        sp_bytes = GaugeMetricFamily("flowcept_spool_bytes", "bytes waiting in the spool",
                                     labels=["spool", "job"])
        for d in self.spool_dirs:
            count: Counter = Counter()
            size: Counter = Counter()
            for f in glob.glob(os.path.join(d, "**", "*.batch"), recursive=True):
                try:
                    jid = unpack_batch_key(bytes.fromhex(os.path.basename(f)[:-len(".batch")]))[0]
                    job = job_label(jid, self._names)
                except (ValueError, struct.error):   # not a spooled batch's name
                    job = UNKNOWN_JOB
                count[job] += 1
                try:
                    size[job] += os.path.getsize(f)
                except OSError:
                    pass
            for job in sorted(count) or [UNKNOWN_JOB]:
                sp_files.add_metric([d, job], count[job])
                sp_bytes.add_metric([d, job], size[job])
        yield from (sp_files, sp_bytes)

        L = ["leader", "job"]
        dr = CounterMetricFamily("flowcept_leader_records_drained", "records a node leader drained",
                                 labels=L)
        db = CounterMetricFamily("flowcept_leader_batches_drained", "batches a node leader published",
                                 labels=L)
        lrun = GaugeMetricFamily("flowcept_leader_running", "1 while the node leader drains", labels=L)
        for doc in leaders:
            lab = [f"{doc.get('node', '?')}:{doc.get('pid', '?')}", str(doc.get("job", UNKNOWN_JOB))]
            dr.add_metric(lab, float(doc.get("records", 0)))
            db.add_metric(lab, float(doc.get("batches", 0)))
            lrun.add_metric(lab, 1.0 if doc.get("running") else 0.0)
        for name, d in self.drainers.items():
            job = getattr(getattr(getattr(d, "transport", None), "job", None), "job_name", UNKNOWN_JOB)
            dr.add_metric([name, job], getattr(d, "records", 0))
            db.add_metric([name, job], getattr(d, "batches", 0))
            lrun.add_metric([name, job], 1.0)
        yield from (dr, db, lrun)
        for what, k in n_err.items():
            errors.add_metric([what], k)
        yield errors
        took = GaugeMetricFamily("flowcept_exporter_scrape_seconds", "time to collect these metrics")
        took.add_metric([], time.perf_counter() - t0)
        yield took


def start_exporter(collector: FlowceptCollector, port: int, host: str = "127.0.0.1"):
    """Serves /metrics in a background thread; returns the HTTP server (call .shutdown())."""
    try:
        from prometheus_client import start_http_server
    except ImportError:
        raise ImportError("flowcept metrics needs prometheus-client: pip install 'flowcept[metrics]'") from None
    res = start_http_server(port, addr=host, registry=collector.registry)
    return res[0] if isinstance(res, tuple) else res


def run_exporter(collector: FlowceptCollector, port: int, host: str = "127.0.0.1",
                 stop: Optional[threading.Event] = None) -> None:
    server = start_exporter(collector, port, host)
    stop = stop or threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        if server is not None:
            server.shutdown()
