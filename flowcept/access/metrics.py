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
* in the same process, leaders' Drainers passed to :meth:`add_drainer`
  (records and batches drained).

Rates ("records per second") are Prometheus ``rate()`` of the ``_total``
counters; the dashboards in grafana/ do that.
"""
from __future__ import annotations

import glob
import os
import threading
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence


class FlowceptCollector:
    def __init__(self, stores: Sequence[str] = (), shm_dirs: Sequence[str] = (),
                 spool_dirs: Sequence[str] = ()):
        self.stores = list(stores)
        self.shm_dirs = list(shm_dirs)
        self.spool_dirs = list(spool_dirs)
        self.drainers: Dict[str, object] = {}
        self._seen: Dict[str, Dict[bytes, tuple]] = {}   # store path -> batch key -> counts
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
        """A leader in this process: its Drainer's records/batches counters are exported."""
        self.drainers[name] = drainer

    # -- reading ------------------------------------------------------------------------------
    def _store_counts(self, store_path: str):
        """(records, batches, Counter[(activity, status)]) of one store dir, incrementally."""
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
                seen[bytes(key)] = (len(tasks), c)
        total = Counter()
        records = 0
        for n, c in seen.values():
            records += n
            total.update(c)
        return records, len(seen), total

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
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        t0 = time.perf_counter()
        with self._lock:
            rec = CounterMetricFamily("flowcept_records_stored", "task records in the store", labels=["store"])
            bat = CounterMetricFamily("flowcept_batches_stored", "batches in the store", labels=["store"])
            tasks = GaugeMetricFamily("flowcept_tasks", "stored tasks by activity and status",
                                      labels=["store", "activity", "status"])
            failed = GaugeMetricFamily("flowcept_tasks_failed", "stored tasks with status ERROR",
                                       labels=["store"])
            errors = GaugeMetricFamily("flowcept_exporter_errors", "sources the exporter could not read",
                                       labels=["what"])
            keeper = {k: CounterMetricFamily(f"flowcept_keeper_{k}", doc, labels=["store", "keeper"])
                      for k, doc in (("batches_in", "new batches stored by the keeper"),
                                     ("records_in", "new records stored by the keeper"),
                                     ("duplicates", "redelivered batches skipped (already stored)"),
                                     ("rejected", "batches quarantined"),
                                     ("acked", "entries acknowledged"),
                                     ("store_errors", "failed store commits (entries redelivered)"),
                                     ("transport_errors", "failed acknowledgements"))}
            krun = GaugeMetricFamily("flowcept_keeper_running", "1 while the keeper runs",
                                     labels=["store", "keeper"])
            kage = GaugeMetricFamily("flowcept_keeper_status_age_seconds", "age of the keeper status file",
                                     labels=["store", "keeper"])
            quar = GaugeMetricFamily("flowcept_quarantined_batches", "batches in the quarantine",
                                     labels=["store"])
            n_err = Counter()
            from flowcept.query.tasks import find_stores
            for top in self.stores:
                try:
                    paths = find_stores(top)
                except FileNotFoundError:
                    paths = []
                for sp in paths:
                    label = os.path.relpath(sp, top) if sp != top else os.path.basename(sp.rstrip("/"))
                    try:
                        n, nb, c = self._store_counts(sp)
                    except Exception:   # a store being created or damaged: say so, keep scraping
                        n_err["store"] += 1
                        continue
                    rec.add_metric([label], n)
                    bat.add_metric([label], nb)
                    for (act, status), k in sorted(c.items()):
                        tasks.add_metric([label, act, status], k)
                    failed.add_metric([label], sum(k for (_a, s), k in c.items() if s == "ERROR"))
                    if glob.glob(os.path.join(sp, "keeper-*.status.json")):
                        try:
                            from flowcept.keeper import read_status
                            st = read_status(sp)
                        except Exception:
                            n_err["keeper"] += 1
                            continue
                        quar.add_metric([label], st.get("quarantined", 0))
                        for kd in st["keepers"]:
                            name = str(kd.get("name", "?"))
                            for k, fam in keeper.items():
                                fam.add_metric([label, name], float(kd.get(k, 0)))
                            krun.add_metric([label, name], 1.0 if kd.get("running") else 0.0)
                            kage.add_metric([label, name], max(0.0, time.time() - kd.get("updated", 0)))
            yield from (rec, bat, tasks, failed, *keeper.values(), krun, kage, quar)

            cap = CounterMetricFamily("flowcept_ring_records_captured", "records pushed into the ring",
                                      labels=["ring", "rank"])
            spill = CounterMetricFamily("flowcept_ring_spilled", "records spilled to the spill file",
                                        labels=["ring", "rank"])
            drop = CounterMetricFamily("flowcept_ring_dropped", "records dropped (full ring, drop policy)",
                                       labels=["ring", "rank"])
            torn = CounterMetricFamily("flowcept_ring_torn", "torn records found", labels=["ring", "rank"])
            lag = GaugeMetricFamily("flowcept_leader_lag_bytes",
                                    "ring bytes written but not yet drained by the leader",
                                    labels=["ring", "rank"])
            rings = GaugeMetricFamily("flowcept_rings", "ring files seen", labels=["shm_dir"])
            try:
                found = self._rings()
            except Exception:
                found = []
                n_err["rings"] += 1
            for path, s in found:
                lab = [os.path.basename(path), str(s.get("rank", ""))]
                cap.add_metric(lab, s.get("pushed", 0))
                spill.add_metric(lab, s.get("spilled", 0))
                drop.add_metric(lab, s.get("dropped", 0))
                torn.add_metric(lab, s.get("torn", 0))
                lag.add_metric(lab, max(0, int(s.get("head", 0)) - int(s.get("tail", 0))))
            for d in self.shm_dirs:
                rings.add_metric([d], sum(1 for p, _ in found if p.startswith(d)))
            yield from (cap, spill, drop, torn, lag, rings)

            sp_files = GaugeMetricFamily("flowcept_spool_batches", "batches waiting in the spool",
                                         labels=["spool"])
            sp_bytes = GaugeMetricFamily("flowcept_spool_bytes", "bytes waiting in the spool", labels=["spool"])
            for d in self.spool_dirs:
                files = glob.glob(os.path.join(d, "**", "*.batch"), recursive=True)
                size = 0
                for f in files:
                    try:
                        size += os.path.getsize(f)
                    except OSError:
                        pass
                sp_files.add_metric([d], len(files))
                sp_bytes.add_metric([d], size)
            yield from (sp_files, sp_bytes)

            dr = CounterMetricFamily("flowcept_leader_records_drained", "records a leader drained",
                                     labels=["leader"])
            db = CounterMetricFamily("flowcept_leader_batches_drained", "batches a leader published",
                                     labels=["leader"])
            for name, d in self.drainers.items():
                dr.add_metric([name], getattr(d, "records", 0))
                db.add_metric([name], getattr(d, "batches", 0))
            yield from (dr, db)
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
