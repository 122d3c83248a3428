"""Open an HTML report in headless Chromium: take a screenshot, count the figures that rendered.

    from vlmkit.report.browser import screenshot, rendered_images
    screenshot("outputs/smoke/report/report.html", "report.png")       # 1280 × 2000 window as a PNG
    screenshot("outputs/smoke/report/report.html", "all.png", full_page=True)  # the whole page
    loaded, total = rendered_images("outputs/smoke/report/report.html")  # <img> elements that decoded

Chromium is found as ``$VLMKIT_CHROMIUM``, ``/usr/bin/chromium`` or on ``PATH`` (Debian/Ubuntu:
``apt-get install chromium chromium-driver``). Every launch uses a fresh, throw-away profile
(``--user-data-dir``), no sandbox (so it works as root and in containers), no GPU, no background
networking, and is killed, with its child processes, after ``timeout_s`` seconds.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vlmkit.errors import VLMKitError

HEADLESS_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_PROBE_ID = "vlmkit-image-probe"
_MAX_HEIGHT = 16384  # Chromium's largest screenshot surface
# runs on window load (every <img> has then loaded or failed) and writes "loaded/total/page height" into the DOM
_PROBE = ("<script>window.addEventListener('load',function(){var im=document.images,n=0;"
          "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)n++;}"
          "var h=Math.ceil(document.documentElement.scrollHeight);"
          "var p=document.createElement('pre');p.id='" + _PROBE_ID + "';p.textContent=n+'/'+im.length+'/'+h;"
          "document.body.appendChild(p);});</script>")


class BrowserError(VLMKitError, RuntimeError):
    """Chromium failed, timed out, or did not produce what was asked."""


class BrowserNotFoundError(BrowserError, FileNotFoundError):
    """No Chromium executable was found."""


def find_chromium(executable: str | os.PathLike | None = None) -> str:
    """Path of the Chromium executable: ``executable``, ``$VLMKIT_CHROMIUM``, ``/usr/bin/chromium`` or PATH."""
    given = executable or os.environ.get("VLMKIT_CHROMIUM")
    if given:
        path = shutil.which(str(given))
        if path is None:
            raise BrowserNotFoundError(f"Chromium executable {str(given)!r} not found or not executable")
        return path
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserNotFoundError(
        "headless Chromium not found (looked for $VLMKIT_CHROMIUM, /usr/bin/chromium and "
        f"{', '.join(_CANDIDATES)} on PATH); on Debian/Ubuntu: "
        "sudo apt-get install -y --no-install-recommends chromium chromium-driver")


def _html_file(html_path: str | os.PathLike) -> Path:
    path = Path(html_path).expanduser().resolve()
    if not path.is_file():
        raise BrowserError(f"HTML file {str(html_path)!r} does not exist (build one with `vlmkit report DIR`)")
    return path


def _launch(args: Sequence[str], timeout_s: float, executable: str | os.PathLike | None) -> str:
    """Run Chromium with the headless flags and a fresh profile; returns its stdout."""
    exe = find_chromium(executable)
    with tempfile.TemporaryDirectory(prefix="vlmkit-chromium-") as profile:
        cmd = [exe, *HEADLESS_FLAGS, f"--user-data-dir={profile}", *args]
        # own session: on a timeout the whole process group (renderer, GPU, zygote ...) is killed
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                start_new_session=True, text=True, errors="replace")
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise BrowserError(f"Chromium did not finish within {timeout_s:g} s: {' '.join(cmd)}") from None
        if proc.returncode != 0:
            # dbus complaints are noise in containers; keep the rest of the tail
            lines = [ln for ln in err.splitlines() if ln.strip() and "dbus" not in ln]
            tail = "\n".join(lines[-10:])
            raise BrowserError(f"Chromium exited with status {proc.returncode}: {' '.join(cmd)}\n{tail}")
    return out


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, width: int = 1280, height: int = 2000,
               timeout_s: float = 60, executable: str | os.PathLike | None = None, full_page: bool = False) -> Path:
    """Render ``html_path`` in a ``width`` × ``height`` headless window and write a PNG; returns its path.

    ``full_page=True`` first measures the page (one more Chromium launch) and grows the window to its
    whole height (at least ``height``, at most 16384 px), so figures below the fold are in the picture.

    Raises:
        BrowserNotFoundError: no Chromium installed.
        BrowserError: the page does not exist, Chromium failed or timed out, or wrote no PNG.
    """
    page = _html_file(html_path)
    png = Path(png_path).expanduser().resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()
    if full_page:
        height = min(max(int(height), _probe(page, width, timeout_s, executable)[2]), _MAX_HEIGHT)
    _launch(["--hide-scrollbars", f"--window-size={int(width)},{int(height)}", f"--screenshot={png}",
             page.as_uri()], timeout_s, executable)
    if not png.is_file() or png.stat().st_size == 0:
        raise BrowserError(f"Chromium wrote no screenshot of {page} to {png}")
    return png


def rendered_images(html_path: str | os.PathLike, timeout_s: float = 60,
                    executable: str | os.PathLike | None = None) -> tuple[int, int]:
    """``(loaded, total)``: how many ``<img>`` elements of the page decoded (``naturalWidth > 0``) of all.

    A copy of the page with a ``<base>`` pointing at its folder (relative figure paths resolve as in
    the original) and a small on-load script is opened with ``--dump-dom``; the original is not touched.
    """
    loaded, total, _ = _probe(_html_file(html_path), 1280, timeout_s, executable)
    return loaded, total


def _probe(page: Path, width: int, timeout_s: float, executable: str | os.PathLike | None) -> tuple[int, int, int]:
    """(loaded images, images, page height in px) of ``page`` rendered ``width`` px wide."""
    text = page.read_text(encoding="utf-8", errors="replace")
    base = f'<base href="{html.escape(page.parent.as_uri() + "/", quote=True)}">'
    head = re.search(r"<head\b[^>]*>", text, flags=re.IGNORECASE)
    text = text[:head.end()] + base + text[head.end():] if head else base + text
    body_end = text.lower().rfind("</body>")
    text = text[:body_end] + _PROBE + text[body_end:] if body_end >= 0 else text + _PROBE
    with tempfile.TemporaryDirectory(prefix="vlmkit-probe-") as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(text, encoding="utf-8")
        dom = _launch([f"--window-size={int(width)},1000", "--dump-dom", probe.as_uri()], timeout_s, executable)
    m = re.search(rf'<pre id="{_PROBE_ID}">(\d+)/(\d+)/(\d+)</pre>', dom)
    if m is None:
        raise BrowserError(f"{page} did not finish loading in headless Chromium (no image count in the dumped DOM)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))
