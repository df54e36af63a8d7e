"""Check the built docs in a real browser: what a reader sees, not what Sphinx wrote.

    python docs/check_site.py BUILD_DIR [--chromium /usr/bin/chromium]
                                        [--chromedriver /usr/bin/chromedriver]

Serves BUILD_DIR over HTTP on localhost (nothing else is fetched: a page that needs the
network shows here as it would offline) and renders, in headless Chromium, the landing
page, every tutorial, the API pages and every other content page. A page fails on

- raw TeX: a math element MathJax did not typeset, a MathJax error, or `\\(`, `\\[`,
  `$...\\cmd...$` left in the visible text outside code;
- a Python traceback in the page (a cell that raised but was rendered anyway);
- an empty output cell, or a matplotlib figure with no axes;
- an image that is missing or does not decode (zero natural size);
- a resource the browser could not load (a console error);
- a tutorial without any output (built without executing it).

Exits 0 when every page passes, 1 when one fails, and 2 (with a message saying so) when
the browser cannot be started: the check never passes silently.
"""

import argparse
import functools
import http.server
import pathlib
import sys
import threading

# Runs in the page; returns what is wrong with it as a list of strings.
_PROBE = r"""
const done = arguments[arguments.length - 1];
const problems = [];
const visible = (root) => {
  const copy = root.cloneNode(true);
  copy.querySelectorAll("pre, code, script, style, mjx-container, .highlight, textarea")
      .forEach((e) => e.remove());
  return copy.textContent;
};
const check = () => {
  const body = document.querySelector("article") || document.body;
  const maths = body.querySelectorAll(".math");
  maths.forEach((m) => {
    if (!m.querySelector("mjx-container") && !m.closest("mjx-container"))
      problems.push("raw TeX (not typeset): " + m.textContent.trim().slice(0, 80));
  });
  body.querySelectorAll("mjx-merror").forEach((e) =>
      problems.push("MathJax error: " + e.textContent.slice(0, 80)));
  const text = visible(body);
  const tex = text.match(/\\\(|\\\)|\\\[|\\\]|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$/);
  if (tex) {
    const i = text.indexOf(tex[0]);
    problems.push("raw TeX in text: " + text.slice(Math.max(0, i - 30), i + 50).trim());
  }
  const full = body.textContent;
  // Python's own header, and the rule IPython draws above a traceback.
  for (const marker of ["Traceback (most recent call last)", "-".repeat(75)]) {
    const i = full.indexOf(marker);
    if (i >= 0) problems.push("Python traceback: " + full.slice(i, i + 160).replace(/\s+/g, " "));
  }
  body.querySelectorAll(".cell_output, .output").forEach((out) => {
    const hasMedia = out.querySelector("img, svg, table, iframe, canvas, video");
    if (!hasMedia && out.textContent.trim() === "")
      problems.push("empty output cell after: " +
          (out.closest(".cell")?.querySelector(".cell_input")?.textContent || "?")
              .trim().slice(0, 60));
    if (/Figure size [\d.]+x[\d.]+ with 0 Axes/.test(out.textContent))
      problems.push("a figure with no axes");
  });
  document.querySelectorAll("img").forEach((img) => {
    if (!img.complete || img.naturalWidth === 0)
      problems.push("broken image: " + (img.getAttribute("src") || "").slice(0, 80));
  });
  done({problems: problems, maths: maths.length,
        images: document.querySelectorAll("article img").length,
        outputs: body.querySelectorAll(".cell_output").length});
};
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(check, (e) => { problems.push("MathJax failed: " + e); check(); });
} else {
  if (document.querySelector(".math")) problems.push("MathJax not loaded");
  check();
}
"""


def _pages(root: pathlib.Path):
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    pages = [
        p.relative_to(root).as_posix()
        for p in sorted(root.rglob("*.html"))
        if p.name not in skip and not p.relative_to(root).parts[0].startswith("_")
    ]
    # The landing page first, then the tutorials, the API, the rest.
    return sorted(
        pages,
        key=lambda p: (
            p != "index.html",
            not p.startswith("tutorials/"),
            not p.startswith("api/"),
            p,
        ),
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(root: pathlib.Path):
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _browser(chromium: str, chromedriver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    return driver


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=pathlib.Path, help="the HTML build directory")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args(argv)
    root = args.build.resolve()
    pages = _pages(root)
    if "index.html" not in pages or not any(p.startswith("tutorials/") for p in pages):
        print(f"check_site: {root} is not a built scoreflow site (no index or tutorials)")
        return 1
    try:
        driver = _browser(args.chromium, args.chromedriver)
    except Exception as e:  # no browser: say so, never pass
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"check_site: CANNOT START THE BROWSER ({type(e).__name__}: {first}); NOTHING CHECKED"
        )
        return 2
    server = _serve(root)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    failed = 0
    try:
        for page in pages:
            driver.get(base + page)
            result = driver.execute_async_script(_PROBE)
            problems = list(dict.fromkeys(result["problems"]))
            problems += [
                "console: " + entry["message"][:160]
                for entry in driver.get_log("browser")
                # The browser asks for /favicon.ico by itself; the site has none.
                if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
            ]
            if page.startswith("tutorials/") and result["outputs"] == 0:
                problems.append("no output cells: the notebook was not executed")
            status = "FAIL" if problems else "ok  "
            print(
                f"{status} {page}  ({result['maths']} math, {result['images']} images, "
                f"{result['outputs']} outputs)"
            )
            for problem in problems[:10]:
                print(f"       {problem}")
            failed += bool(problems)
    finally:
        driver.quit()
        server.shutdown()
    print(f"check_site: {len(pages) - failed} passed, {failed} failed ({len(pages)} pages)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
