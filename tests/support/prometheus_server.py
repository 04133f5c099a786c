"""A real Prometheus server for tests: installed from Debian when missing, started on
a free 127.0.0.1 port with a given scrape target, stopped by its PID."""
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

INSTALL = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]


def ensure_prometheus():
    """The prometheus binary, or None with the reason it cannot be had."""
    exe = shutil.which("prometheus")
    if exe:
        return exe, None
    if os.geteuid() != 0:
        return None, "prometheus is not installed and installing needs root: " + " ".join(INSTALL)
    try:
        subprocess.run(INSTALL, check=True, timeout=600, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (subprocess.SubprocessError, OSError) as e:
        return None, f"cannot install prometheus ({' '.join(INSTALL)}): {e}"
    return shutil.which("prometheus"), None


class Prometheus:
    def __init__(self, exe, directory, port, targets, interval="1s"):
        self.dir, self.port = directory, port
        os.makedirs(directory, exist_ok=True)
        cfg = os.path.join(directory, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: %s\n  evaluation_interval: %s\n"
                    "scrape_configs:\n  - job_name: flowcept\n    honor_labels: true\n    static_configs:\n"
                    "      - targets: [%s]\n" % (interval, interval, ", ".join(f"'{t}'" for t in targets)))
        self.log = open(os.path.join(directory, "prometheus.log"), "w")
        self.proc = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={directory}/data",
                                      f"--web.listen-address=127.0.0.1:{port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited: " + open(self.log.name).read()[-2000:])
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError("prometheus did not become ready in 30 s")

    def query(self, expr):
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def wait_for(self, expr, ok, timeout=60.0):
        """Polls until ok(result) (samples appear only after a few scrapes)."""
        t0, last = time.monotonic(), None
        while time.monotonic() - t0 < timeout:
            last = self.query(expr)
            if ok(last):
                return last
            time.sleep(0.5)
        raise TimeoutError(f"{expr}: still {last} after {timeout}s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
