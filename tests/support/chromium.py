"""A real headless browser for the web UI tests: Debian's chromium (installed with apt-get
when missing and root) driven by Playwright's Python client (``pip install playwright``,
the test extra; its own browser download, ``playwright install``, is never used).

The browser gets no network but loopback: its background services are off, host names
other than 127.0.0.1/localhost resolve to nothing, and :func:`guard_network` aborts (and
records) any request a page makes to another host."""
import os
import shutil
import subprocess
import time
import urllib.parse

CHROMIUM = "/usr/bin/chromium"
INSTALL = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "chromium"]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]
LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def ensure_chromium(timeout: float = 900.0):
    """(path, None), or (None, why it cannot be had)."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM, None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "chromium is not installed and installing it needs root: " + " ".join(INSTALL)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + timeout
    for attempt in (1, 2):
        try:
            subprocess.run(INSTALL, check=True, capture_output=True, env=env,
                           timeout=max(30.0, deadline - time.monotonic()))
            break
        except subprocess.CalledProcessError:
            if attempt == 2:
                return None, f"cannot install chromium ({' '.join(INSTALL)})"
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env,
                           timeout=max(30.0, deadline - time.monotonic()))
        except (subprocess.SubprocessError, OSError) as e:
            return None, f"cannot install chromium ({' '.join(INSTALL)}): {e}"
    return (CHROMIUM, None) if os.access(CHROMIUM, os.X_OK) else (None, "apt-get did not provide " + CHROMIUM)


def launch(playwright, executable):
    return playwright.chromium.launch(executable_path=executable, args=ARGS, headless=True)


def is_loopback(url: str) -> bool:
    u = urllib.parse.urlsplit(url)
    if u.scheme in ("data", "blob", "about"):
        return True
    return u.scheme in ("http", "https", "ws", "wss") and (u.hostname or "") in LOOPBACK


def guard_network(context, attempts: list) -> None:
    """Every request of every page of ``context`` to a host other than loopback is aborted and
    appended to ``attempts``."""
    def handle(route):
        url = route.request.url
        if is_loopback(url):
            route.continue_()
        else:
            attempts.append(url)
            route.abort()
    context.route("**/*", handle)
    context.on("request", lambda r: None if is_loopback(r.url) else attempts.append(r.url))
