"""P8 and P9: the JavaScript the report page ships, and how soon its first chart is drawn.

P8 reads the bytes Chromium actually received (Chrome DevTools Protocol, Network domain:
encodedDataLength of each script, and whether it was served from the cache).
P9 compares Plotly's basic partial bundle with the full bundle on a copy of the report
page's charts, served by a plain static server, in fresh browser contexts (cold caches).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench import procs
from bench.browser import new_context
from bench.context import Bench
from bench.data import session_cookie
from bench.env import BENCH_DIR, CACHE_DIR, PYTHON
from bench.results import Results, fmt_ratios, interleaved, median, ratios

ROUNDS = 5
CHART_SELECTOR = ".chart .main-svg"


def full_bundle() -> Path:
    """The full Plotly bundle shipped inside the Python plotly package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _brotli_path(source: Path) -> Path:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    return CACHE_DIR / f"{source.stem}-{digest}.js.br"


def start_full_bundle_brotli() -> subprocess.Popen[bytes] | None:
    """Brotli (quality 11, as whitenoise compresses) of the full bundle takes ~10 s: start it
    in the background at the beginning; the result is kept in var/bench-cache/ across runs."""
    source = full_bundle()
    target = _brotli_path(source)
    if target.exists():
        return None
    code = (
        "import brotli, sys, pathlib; "
        "pathlib.Path(sys.argv[2] + '.tmp').write_bytes("
        "brotli.compress(pathlib.Path(sys.argv[1]).read_bytes())); "
        "pathlib.Path(sys.argv[2] + '.tmp').rename(sys.argv[2])"
    )
    return subprocess.Popen([PYTHON, "-c", code, str(source), str(target)])


class NetLog:
    """Every response of one page as the browser's network stack saw it (CDP)."""

    def __init__(self, context: Any, page: Any) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.responseReceived", self._response)
        cdp.on("Network.requestServedFromCache", self._cached)
        cdp.on("Network.loadingFinished", self._finished)

    def _entry(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.entries.setdefault(event["requestId"], {"cached": False, "bytes": 0})

    def _response(self, event: dict[str, Any]) -> None:
        response = event["response"]
        headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
        self._entry(event).update(
            url=response["url"],
            type=event["type"],
            encoding=headers.get("content-encoding", ""),
            cache_control=headers.get("cache-control", ""),
            cached=self._entry(event)["cached"]
            or bool(response.get("fromDiskCache") or response.get("fromPrefetchCache")),
        )

    def _cached(self, event: dict[str, Any]) -> None:
        self._entry(event)["cached"] = True

    def _finished(self, event: dict[str, Any]) -> None:
        self._entry(event)["bytes"] = int(event["encodedDataLength"])

    def scripts(self) -> list[dict[str, Any]]:
        return [e for e in self.entries.values() if e.get("type") == "Script"]


def _load(page: Any, url: str | None = None) -> None:
    if url:
        page.goto(url)
    else:
        page.reload()
    page.wait_for_load_state("load")
    page.wait_for_selector(CHART_SELECTOR, timeout=30_000)
    page.wait_for_timeout(300)  # the last loadingFinished events


def run_p8(bench: Bench, results: Results, brotli_job: subprocess.Popen[bytes] | None) -> None:
    """P8: JS bytes on a cold load of a finished 12-month report page (fresh context, Accept-
    Encoding: br, so whitenoise serves its precompressed .br files): the sum of the scripts'
    transfer sizes, against brotli (quality 11) of the full Plotly bundle. Then a reload:
    bytes of script re-downloaded (hashed names, Cache-Control immutable: should be 0)."""
    owner, report_id = bench.shared["twelve_month_report"]
    context = new_context(
        bench.browser,
        bench.base_url,
        session_cookie(owner),
        extra_http_headers={"Accept-Encoding": "br"},
    )
    try:
        page = context.new_page()
        net = NetLog(context, page)
        _load(page, f"{bench.base_url}/reports/{report_id}/")
        cold = net.scripts()
        bench.shared["figures"] = page.evaluate(
            """() => Array.from(document.querySelectorAll('script[type="application/json"]'))
                 .filter((s) => s.id.startsWith("figure-")).map((s) => [s.id, s.textContent])"""
        )
        net.entries.clear()
        _load(page)
        warm = net.scripts()
    finally:
        context.close()

    if brotli_job is not None:
        brotli_job.wait(120)
    full = full_bundle()
    full_br = _brotli_path(full).stat().st_size
    full_gz = len(gzip.compress(full.read_bytes(), 9))
    cold_bytes = sum(e["bytes"] for e in cold)
    share = cold_bytes / full_br
    for e in sorted(cold, key=lambda e: -e["bytes"]):
        results.add(
            "P8",
            f"cold: {e['url'].rsplit('/', 1)[-1]}",
            f"{e['bytes']:,} B ({e['encoding'] or 'identity'}; {e['cache_control']})",
        )
    results.add(
        "P8",
        "full Plotly bundle (plotly.min.js)",
        f"{full.stat().st_size:,} B raw, {full_br:,} B brotli-11, {full_gz:,} B gzip-9",
    )
    results.add(
        "P8",
        f"cold-load JS transferred ({len(cold)} scripts)",
        f"{cold_bytes:,} B = {share:.3f} x the full bundle (brotli)",
        goal="≤ 0.35",
        met=share <= 0.35,
    )
    redownloaded = sum(e["bytes"] for e in warm if not e["cached"])
    cached = sum(e["cached"] for e in warm)
    results.add(
        "P8",
        "reload: JS bytes downloaded again",
        f"{redownloaded:,} B ({cached} of {len(warm)} scripts from the browser cache)",
        goal="= 0",
        met=redownloaded == 0 and len(warm) > 0,
    )


P9_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>P9 {name}</title>
<script>
  window.__firstChart = null;
  new MutationObserver(function (records, observer) {{
    if (document.querySelector("{selector}")) {{
      window.__firstChart = performance.now();
      observer.disconnect();
    }}
  }}).observe(document, {{subtree: true, childList: true}});
</script>
<script src="{bundle}" defer></script>
<script src="charts.js" defer></script>
</head><body>
{charts}
</body></html>
"""


def _p9_pages(directory: Path, figures: list[list[str]]) -> None:
    from django.contrib.staticfiles import finders

    directory.mkdir(parents=True, exist_ok=True)
    basic = finders.find("vendor/plotly/plotly-basic.min.js")
    charts_js = finders.find("js/charts.js")
    assert basic and charts_js, "collectstatic sources are missing"
    shutil.copy(basic, directory / "plotly-basic.min.js")
    shutil.copy(full_bundle(), directory / "plotly.min.js")
    shutil.copy(charts_js, directory / "charts.js")
    blocks = "\n".join(
        f'<div class="chart" data-figure="{html.escape(fid)}"></div>\n'
        f'<script type="application/json" id="{html.escape(fid)}">{text}</script>'
        for fid, text in figures
    )
    for name, bundle in (("partial", "plotly-basic.min.js"), ("full", "plotly.min.js")):
        (directory / f"{name}.html").write_text(
            P9_PAGE.format(name=name, bundle=bundle, charts=blocks, selector=CHART_SELECTOR)
        )


def _first_chart(browser: Any, url: str) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("window.__firstChart !== null", timeout=60_000)
        timing: dict[str, float] = page.evaluate(
            """() => ({
                chart: window.__firstChart,
                dcl: performance.getEntriesByType("navigation")[0].domContentLoadedEventStart,
                response: performance.getEntriesByType("navigation")[0].responseEnd,
            })"""
        )
        return timing
    finally:
        context.close()


def run_p9(bench: Bench, results: Results) -> None:
    """P9: time to the first chart, partial vs full Plotly bundle. The same page for both:
    the report page's own figure data islands (from P8) and static/js/charts.js, the bundle
    loaded with `defer` as on the report page, charts drawn on DOMContentLoaded. Measured in
    the page: performance.now() when the first .main-svg appears (MutationObserver), from
    navigation start, so the bundle's download, parse and run are included. Fresh context
    per load; partial and full interleaved over 5 rounds; median of per-round ratios."""
    figures = bench.shared.get("figures")
    if not figures:
        results.error("P9", "no figure data from P8")
        return
    directory = BENCH_DIR / "p9"
    _p9_pages(directory, figures)
    server, base = procs.start_static_server(directory)
    try:
        pages = [
            lambda: _first_chart(bench.browser, f"{base}/partial.html"),
            lambda: _first_chart(bench.browser, f"{base}/full.html"),
        ]
        interleaved(1, *pages)  # warm the OS file cache
        partial, full = interleaved(ROUNDS, *pages)
    finally:
        server.stop()
    per_round = ratios([p["chart"] for p in partial], [f["chart"] for f in full])
    for name, runs in (("partial (basic)", partial), ("full", full)):
        charts = [r["chart"] for r in runs]
        each = ", ".join(f"{t:.0f}" for t in charts)
        results.add(
            "P9",
            f"{name}: first chart / DOMContentLoaded (ms from navigation, median)",
            f"{median(charts):.0f} / {median([r['dcl'] for r in runs]):.0f} ms (rounds: {each})",
        )
    results.add("P9", "per-round ratios", fmt_ratios(per_round))
    label = f"time to first chart, partial / full (median of {ROUNDS})"
    results.median_at_most("P9", label, per_round, 0.5)
    drawing = [median([r["chart"] - r["dcl"] for r in runs]) for runs in (partial, full)]
    results.note(
        "P9",
        f"DOMContentLoaded to first chart (charts.js draws all 5 charts in one task): "
        f"{drawing[0]:.0f} ms partial, {drawing[1]:.0f} ms full",
    )
    results.note(
        "P9",
        "charts are drawn on DOMContentLoaded, which waits for the deferred bundle; the "
        "figure is taken from navigation start so the bundle's parse and run count",
    )
