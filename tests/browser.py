"""Render an HTML report in a real headless Chromium and ask it what it made of the images.

Reading the base64 in Python only proves the bytes are there; whether a browser can actually
decode and lay out each figure is what a reader of ``report.html`` sees, so the check goes through
Chromium itself. Only the command line is used (no DevTools client, no extra Python packages):
a copy of the page gets a small probe script that writes the images' natural sizes into the DOM,
and ``--dump-dom`` hands that DOM back.

Shared by the browser test and ``benchmarks/render_report.py`` so there is one implementation.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

ENV_VAR = "SMCTUNE_CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE_ID = "smctune-render-probe"
SRC_PREFIX = 60

# Running as root (CI, containers) needs --no-sandbox; there is no GPU; /dev/shm may be small in
# containers. The Debian wrapper adds --disable-dev-shm-usage only sometimes, so pass it always.
BASE_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--mute-audio",
)
# Virtual time lets Chromium run the page until it is idle without a wall-clock sleep, so the
# probe's promises settle before the DOM is dumped or the screenshot is taken.
VIRTUAL_TIME_MS = 10000

# Runs at the end of parsing, so every <img> already exists. Lazy ones are switched to eager here,
# before 'load', so whether a far-down figure gets fetched never hinges on Chromium's lazy-load
# distance heuristics for a window that does not scroll.
# Sizes are read on 'load', when Chromium has finished (or given up on) every image; a broken one
# reads 0x0. img.decode() is deliberately not awaited: for large file:// images it settles on
# another thread after --dump-dom has already fired, and the probe would then report nothing.
_PROBE = """
<script>
(function () {
  var imgs = Array.prototype.slice.call(document.images);
  imgs.forEach(function (img) { if (img.loading === 'lazy') { img.loading = 'eager'; } });
  function report() {
    var rows = Array.prototype.map.call(document.images, function (img) {
      var ok = img.complete;
      return {alt: img.getAttribute('alt') || '', src: img.getAttribute('src') || '',
              w: ok ? img.naturalWidth : 0, h: ok ? img.naturalHeight : 0};
    });
    var pre = document.createElement('pre');
    pre.id = '%s';
    pre.textContent = JSON.stringify(rows);
    document.documentElement.appendChild(pre);
  }
  if (document.readyState === 'complete') { report(); }
  else { window.addEventListener('load', report); }
})();
</script>
""" % PROBE_ID

_HEAD_OPEN = re.compile(r"<head(\s[^>]*)?>", re.IGNORECASE)
_PROBE_OUT = re.compile(r'<pre id="%s">(.*?)</pre>' % re.escape(PROBE_ID), re.DOTALL)


def find_chromium() -> Optional[str]:
    """The env var wins so a machine with several browsers (or one outside PATH) can pick."""
    override = os.environ.get(ENV_VAR)
    if override:
        resolved = shutil.which(override)
        if resolved:
            return resolved
        return None
    for name in CANDIDATES:
        resolved = shutil.which(name)
        if resolved:
            return resolved
    return None


def _require_chromium() -> str:
    exe = find_chromium()
    override = os.environ.get(ENV_VAR)
    if exe is None and override:
        raise RuntimeError("$%s=%r is not an executable on PATH or a path to one" % (ENV_VAR, override))
    if exe is None:
        raise RuntimeError(
            "Chromium not found (looked for $%s, then %s on PATH): apt-get install chromium"
            % (ENV_VAR, ", ".join(CANDIDATES))
        )
    return exe


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run_chromium(args: Sequence[str], timeout_s: float, what: str) -> str:
    """Runs one Chromium in its own process group with a throw-away profile.

    Chromium forks a zygote, renderer and GPU process; on a timeout killing only the launcher
    would leave those behind, so the whole group goes. A shared profile dir makes a second
    instance hand off to the first and exit, hence a fresh one per call.
    """
    exe = _require_chromium()
    with tempfile.TemporaryDirectory(prefix="smctune-chromium-") as profile:
        cmd = [exe, *BASE_FLAGS, "--user-data-dir=" + profile, *args]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            raise RuntimeError(
                "Chromium timed out after %gs while %s.\ncommand: %s\nstderr tail:\n%s"
                % (timeout_s, what, " ".join(cmd), _tail(err or ""))
            ) from None
        if proc.returncode != 0:
            raise RuntimeError(
                "Chromium exited with %d while %s.\ncommand: %s\nstderr tail:\n%s"
                % (proc.returncode, what, " ".join(cmd), _tail(err or ""))
            )
        return out


def _with_probe(page: str, base_dir: Path) -> str:
    """The copy lives in a temp dir, so a <base> keeps any relative URLs pointing where the
    original's would; self-contained reports do not need it, but a stray relative figure should
    be judged as the real file would be, not reported broken because of the copy."""
    base = '<base href="%s">' % html.escape(base_dir.resolve().as_uri() + "/", quote=True)
    match = _HEAD_OPEN.search(page)
    if match:
        page = page[: match.end()] + base + page[match.end():]
    # Without a <head> the base is skipped: putting it before a doctype would switch the page
    # into quirks mode, which changes layout more than a missing base changes anything.
    return page + _PROBE


def _label(alt: str, src: str) -> str:
    return alt if alt else src[:SRC_PREFIX]


def render_images(
    html_path: Union[str, Path],
    screenshot: Optional[Path] = None,
    timeout_s: float = 60,
) -> list[tuple[str, int, int]]:
    """Sizes are Chromium's own, zeroed for any image it could not decode, so a caller can fail
    on ``0`` without knowing why the browser gave up on a figure."""
    src = Path(html_path).resolve()
    if not src.is_file():
        raise FileNotFoundError("no such HTML file: %s" % src)
    page = src.read_text(encoding="utf-8", errors="replace")
    with tempfile.TemporaryDirectory(prefix="smctune-render-") as tmp:
        probed = Path(tmp) / "probed.html"
        probed.write_text(_with_probe(page, src.parent), encoding="utf-8")
        dom = _run_chromium(
            ["--virtual-time-budget=%d" % VIRTUAL_TIME_MS, "--dump-dom", probed.as_uri()],
            timeout_s,
            "rendering %s" % src,
        )
    match = _PROBE_OUT.search(dom)
    if match is None:
        raise RuntimeError(
            "Chromium rendered %s but the probe wrote no result (a script error or a "
            "Content-Security-Policy blocking inline scripts?). Dumped DOM tail:\n%s"
            % (src, _tail(dom, 10))
        )
    rows = json.loads(html.unescape(match.group(1)))
    sizes = [(_label(r["alt"], r["src"]), int(r["w"]), int(r["h"])) for r in rows]
    if screenshot is not None:
        take_screenshot(src, Path(screenshot), timeout_s=timeout_s)
    return sizes


def take_screenshot(
    html_path: Union[str, Path],
    out: Path,
    timeout_s: float = 60,
    window_size: tuple[int, int] = (1280, 2400),
) -> Path:
    """Shoots the original file, not the probed copy, so the picture is exactly what a reader
    opening report.html would get."""
    src = Path(html_path).resolve()
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    _run_chromium(
        [
            "--virtual-time-budget=%d" % VIRTUAL_TIME_MS,
            "--screenshot=%s" % out,
            "--window-size=%d,%d" % window_size,
            src.as_uri(),
        ],
        timeout_s,
        "taking a screenshot of %s" % src,
    )
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError("Chromium exited cleanly but wrote no screenshot to %s" % out)
    return out
