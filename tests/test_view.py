"""Seeing the layout (issue 14): the HTML page and SVG map, rendered in a real
headless browser (Debian's chromium driven by playwright), and the ASCII
mini-map of `wsec inspect`.

Without Chromium or playwright the browser tests skip, saying why, on a
developer's machine; in CI (`CI` set, as `.ci/run` does) they fail instead,
since `.ci/run` installs both."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import EXAMPLE, compiled_light, run_wsec

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe, why = None, "playwright is not installed (pip install -e '.[test]')"
    else:
        why = "no Chromium on this machine (apt-get install chromium)"
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run in CI: {why}")
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A page opened from a file, recording console errors and every request."""

    def __init__(self, browser: Any, path: pathlib.Path) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1400})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_load_state("load")

    def pixels(self, png: bytes, points: list[tuple[float, float]]) -> dict[str, Any]:
        """Decode a screenshot in the browser: distinct colours (sampled) and
        the RGBA at `points`."""
        return self.page.evaluate("""async ([b64, points]) => {
            const img = new Image();
            img.src = "data:image/png;base64," + b64;
            await img.decode();
            const c = document.createElement("canvas");
            c.width = img.width; c.height = img.height;
            const g = c.getContext("2d");
            g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data;
            const seen = new Set();
            for (let i = 0; i < d.length; i += 4 * 97) {
              seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
            }
            const at = points.map(([x, y]) => {
              const i = 4 * (Math.round(y) * c.width + Math.round(x));
              return [d[i], d[i + 1], d[i + 2], d[i + 3]];
            });
            return {colours: seen.size, at: at, width: c.width, height: c.height};
        }""", [base64.b64encode(png).decode(), points])


def _check_page(browser: Any, path: pathlib.Path, report: dict[str, Any]) -> Page:
    """What every report page must do: render without a console error, fetch
    nothing but itself, hold one rect.kernel per kernel, show details on
    hover, and draw the bottleneck's outline where the DOM says."""
    pg = Page(browser, path)
    page = pg.page
    kernels = report["kernels"]
    assert page.locator("rect.kernel").count() == len(kernels)
    names = {page.locator("rect.kernel").nth(i).get_attribute("data-name")
             for i in range(len(kernels))}
    assert names == {k["name"] for k in kernels}
    b = report["summary"]["bottleneck"]["kernel"]
    assert page.locator("svg#layout").get_attribute("data-bottleneck") == b
    assert page.locator(f'rect.kernel.bottleneck[data-name="{b}"]').count() == 1
    phase_of = {p["kernel"]: i for i, p in enumerate(report.get("phases", []))}

    def reveal(name: str) -> None:  # weight streaming: a kernel shows in its phase
        if name in phase_of:
            page.locator(f'rect.phase[data-phase="{phase_of[name]}"]').hover()

    # hover: the details panel names the kernel and its figures
    big = max((k for k in kernels if k["name"] != b), key=lambda k: k["pes"], default=kernels[0])
    reveal(big["name"])
    page.locator(f'rect.kernel[data-name="{big["name"]}"]').hover()
    details = page.locator("#details-body").inner_text()
    assert big["name"] in details and f"{big['cycles_per_sample']:,}" in details
    assert ", ".join(big["origin"]) in details
    # the outline sits on the bottleneck kernel, and the screenshot shows it red there
    page.locator("#fit-layout").click()
    reveal(b)
    page.mouse.move(0, 0)
    page.locator("#map").scroll_into_view_if_needed()
    box = page.locator(f'rect.kernel[data-name="{b}"]').bounding_box()
    outline = page.locator("#bottleneck-outline").bounding_box()
    where = page.locator("#map").bounding_box()
    assert box is not None and outline is not None and where is not None
    for key in ("x", "y", "width", "height"):  # the same geometry in the DOM ...
        assert page.locator("#bottleneck-outline").get_attribute(key) == \
            page.locator(f'rect.kernel[data-name="{b}"]').get_attribute(key)
    for key, size in (("x", "width"), ("y", "height")):  # ... and on the screen
        assert abs(box[key] + box[size] / 2 - outline[key] - outline[size] / 2) <= 1.0
    png = page.locator("#map").screenshot()
    stroke = max(1.0, outline["height"] - box["height"])  # the outline's stroke, in pixels
    cx = outline["x"] + outline["width"] / 2 - where["x"]
    top = outline["y"] - where["y"] + 0.75 * stroke  # inside the kernel, on the stroke
    bottom = outline["y"] + outline["height"] - where["y"] - 0.75 * stroke
    px = pg.pixels(png, [(cx, top), (cx, bottom)])
    assert px["colours"] > 20, "the screenshot is blank"
    assert px["width"] >= where["width"] - 1 and px["height"] >= where["height"] - 1
    for r, g, bl, _ in px["at"]:
        assert r > 150 and g < 90 and bl < 90, px["at"]  # the outline's red
    assert pg.errors == []
    assert all(u == pg.url or u.startswith("data:") for u in pg.requests), pg.requests
    return pg


def test_resnet50_report_renders_in_headless_chromium(browser: Any,
                                                       tmp_path: pathlib.Path) -> None:
    from wsec.ir.fabric import Fabric
    from wsec.ir.metrics import route_arrays
    from wsec.report import build_report, headline
    from wsec.view import render_html

    res = compiled_light("resnet50")
    report = build_report(res.module, res.target, res.manager.timings)
    path = tmp_path / "resnet50.html"
    path.write_text(render_html(report, route_arrays(res.module), Fabric.of(res.target)),
                    encoding="utf-8")
    assert report["summary"]["kernels"] > 50
    pg = _check_page(browser, path, report)
    page = pg.page
    assert page.locator("#headline").inner_text() == headline(report)
    # the busiest link is marked where the report says, and the heat map has one
    # image per colour the routes use, switched by the selector
    link = page.locator("#busiest-link")
    assert [link.get_attribute(f"data-{k}") for k in ("x", "y", "port")] == \
        [str(v) for v in report["summary"]["max_link"]]
    colours = {b["color"] for e in report["edges"] for b in e["bundles"]}
    assert page.locator("image.heat").count() == 1 + len(colours)
    key = f"color {min(colours)}"
    page.locator("#color-select").select_option(key)
    assert page.locator(f'image.heat[data-key="{key}"]').get_attribute("visibility") == "visible"
    assert page.locator('image.heat[data-key="all"]').get_attribute("visibility") == "hidden"
    assert pg.errors == []


def test_report_html_from_the_command_line_and_inspect(browser: Any,
                                                      tmp_path: pathlib.Path) -> None:
    r = run_wsec(str(EXAMPLE), "-o", "m.bin", "--report-html", "r.html", "--report-json",
                 "r.json", "-q", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    _check_page(browser, tmp_path / "r.html", report)
    r = run_wsec("inspect", "m.bin", "--html", "i.html", "--svg", "i.svg", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _check_page(browser, tmp_path / "i.html", report)
    svg = ET.parse(tmp_path / "i.svg").getroot()
    rects = [e for e in svg.iter("{http://www.w3.org/2000/svg}rect")
             if "kernel" in (e.get("class") or "").split()]
    assert sorted(e.get("data-name") for e in rects) == sorted(k["name"] for k in
                                                              report["kernels"])


def test_stream_report_has_a_phase_timeline(browser: Any, tmp_path: pathlib.Path) -> None:
    r = run_wsec(str(EXAMPLE), "-o", "s.bin", "--mode", "stream", "--report-html", "s.html",
                 "--report-json", "s.json", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    pg = _check_page(browser, tmp_path / "s.html", report)
    page = pg.page
    phases = report["phases"]
    assert page.locator("rect.phase").count() == len(phases) > 1

    def visible() -> list[str]:
        return [e.get_attribute("data-name") for e in page.locator("rect.kernel").all()
                if e.get_attribute("visibility") != "hidden"]

    assert visible() == [phases[0]["kernel"]]
    page.locator('rect.phase[data-phase="2"]').hover()
    assert visible() == [phases[2]["kernel"]]
    assert phases[2]["kernel"] in page.locator("#phase-name").inner_text()
    page.locator("#all-phases").check()
    assert sorted(visible()) == sorted(k["name"] for k in report["kernels"])
    assert pg.errors == []


def test_inspect_prints_an_ascii_mini_map(tmp_path: pathlib.Path) -> None:
    assert run_wsec(str(EXAMPLE), "-o", "m.bin", "--report-json", "r.json", "-q",
                    cwd=tmp_path).returncode == 0
    report = json.loads((tmp_path / "r.json").read_text())
    r = run_wsec("inspect", "m.bin", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from wsec.report import headline

    assert r.stdout.splitlines()[1] == f"  layout           {headline(report)}"
    text = r.stdout.split("\nmap (", 1)[1]
    rows = [ln for ln in text.splitlines() if ln.startswith("  |")]
    assert rows and len({len(ln) for ln in rows}) == 1
    art = "".join(rows)
    assert "#" in art and "." in art  # the bottleneck kernel, free PEs
    b = report["summary"]["bottleneck"]["kernel"]
    assert f"# bottleneck {b}" in text and "c/C conv" in text
    r2 = run_wsec("inspect", "m.bin", "--no-map", cwd=tmp_path)
    assert "\nmap (" not in r2.stdout
