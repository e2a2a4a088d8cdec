"""The built book renders in a real browser with no network: maths typeset, wide tables scroll.

A two-page book (a MyST page with inline and display maths and a wide Markdown table; a notebook
with a stored wide pandas DataFrame output) is built with the project's own _config.yml (only
execution is turned off), then opened in headless Chromium with every host unresolvable and a dead
proxy. Scripts run (--virtual-time-budget) and the DOM is dumped (--dump-dom); a small probe script,
added to a copy of each page, reports how the tables are laid out.

Chromium comes from Debian (`bash scripts/_chromium.sh` installs it when missing). Without it the
test skips, except on CI (CI set), where it fails: the check must not vanish silently there.
A run takes about 10-20 s (the build about 10 s, the browser a few).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ON_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

PAGE = r"""# Maths and tables

Inline maths in dollars, $v_{ik} = \mu_k + \sigma \epsilon_{ik}$, and as a role,
{math}`\log p(x_{ik} \mid u_k)`.

Display maths in dollars:

$$
\mathcal{L} = \mathbb{E}_{q}\left[\log p(x \mid u, v)\right] - \mathrm{KL}\left(q(u) \,\|\, p(u)\right)
$$

A `{math}` block with a label:

```{math}
:label: tiny-eq
\hat{\mu}_k = \frac{1}{n_k} \sum_{i=1}^{n_k} x_{ik}
```

and amsmath:

\begin{align}
a &= b + c \\
d &= e f
\end{align}

See {eq}`tiny-eq`.

| preset | holdout_nll | recon_mse | translation_mse | u_probe_mse | v_probe_mse | v_minus_u_probe | instance_probe_mse | an_extra_long_column_name |
|---|---|---|---|---|---|---|---|---|
| cxvae | 3.1234 [3.0001, 3.2345] | 0.1234 [0.1001, 0.1345] | 0.2234 [0.2001, 0.2345] | 0.3234 [0.3001, 0.3345] | 0.4234 [0.4001, 0.4345] | 0.5234 [0.5001, 0.5345] | 0.6234 [0.6001, 0.6345] | 0.7234 [0.7001, 0.7345] |
"""

# Runs in the page copy once it is parsed and MathJax (if any) has typeset: for every table in the
# article, the nearest ancestor that scrolls sideways and whether the table fits in the article.
PROBE = """
<script>
document.addEventListener("DOMContentLoaded", function () {   // deferred scripts (MathJax) have run
  var ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
  ready.catch(function () {}).then(function () {
    var article = document.querySelector("article") || document.body;
    var right = article.getBoundingClientRect().right;
    var tables = Array.prototype.map.call(article.querySelectorAll("table"), function (t) {
      var box = t.parentElement;
      while (box && box !== article && ["auto", "scroll"].indexOf(getComputedStyle(box).overflowX) < 0) {
        box = box.parentElement;
      }
      var scrolls = !!box && box !== article;
      return {
        table_class: t.className,
        table_width: t.getBoundingClientRect().width,
        scroll_box_class: scrolls ? box.className : null,
        overflow_x: scrolls ? getComputedStyle(box).overflowX : null,
        box_overflows: scrolls ? box.scrollWidth > box.clientWidth : null,
        scrollbar_height: scrolls ? box.offsetHeight - box.clientHeight : null,
        box_right: scrolls ? box.getBoundingClientRect().right : null,
        article_right: right
      };
    });
    var out = document.createElement("pre");
    out.id = "cxvae-probe";
    out.textContent = JSON.stringify({mathjax: !!(window.MathJax && MathJax.version), tables: tables});
    document.body.appendChild(out);
  });
});
</script>
"""


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    message = "no Chromium on PATH (" + ", ".join(BROWSERS) + "); `bash scripts/_chromium.sh` installs it"
    if ON_CI:
        pytest.fail(message + " -- on CI this test must run, not skip")
    pytest.skip(message)


def _dataframe_notebook() -> dict:
    """A notebook whose one code cell has a stored wide DataFrame output (as the chapters' summaries)."""
    import nbformat
    import pandas as pd

    columns = ["holdout_nll", "recon_mse", "translation_mse", "u_probe_mse", "v_probe_mse",
               "v_minus_u_probe", "instance_probe_mse", "an_extra_long_column_name"]
    frame = pd.DataFrame({c: [f"{j}.1234 [{j}.0001, {j}.2345]" for j in range(3)] for c in columns},
                         index=pd.Index(["cxvae", "gvae", "oracle"], name="preset"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A DataFrame output"),
        nbformat.v4.new_code_cell("frame", execution_count=1, outputs=[nbformat.v4.new_output(
            "execute_result", execution_count=1,
            data={"text/html": frame._repr_html_(), "text/plain": frame.to_string()})]),
    ]
    return nb


def _build_tiny_book(tmp_path: Path) -> Path:
    """Build the one-page book with the project's _config.yml; returns the HTML folder."""
    import nbformat

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"   # the notebook's output is stored
    src = tmp_path / "src"
    (src / "pages").mkdir(parents=True)   # not book/: the config excludes book/*.ipynb (paired notebooks)
    # Files the config names by path (bibliographies, static folders) come along, at the same place.
    sphinx_config = config.get("sphinx", {}).get("config", {})
    for rel in list(config.get("bibtex_bibfiles", [])) + list(sphinx_config.get("html_static_path", [])):
        origin, target = ROOT / rel, src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if origin.is_dir() else shutil.copy)(origin, target)
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (src / "_toc.yml").write_text(yaml.safe_dump(
        {"format": "jb-book", "root": "pages/page", "chapters": [{"file": "pages/frame"}]}, sort_keys=False))
    (src / "pages" / "page.md").write_text(PAGE)
    nbformat.write(nbformat.from_dict(_dataframe_notebook()), src / "pages" / "frame.ipynb")

    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book) if jupyter_book.exists() else "jupyter-book", "build", str(src), "-W", "-n",
               "--keep-going", "--path-output", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"tiny book build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return tmp_path / "_build" / "html"


def _offline_dom(browser: str, page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran in headless Chromium with the network blocked."""
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
        "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
        # No network: every host name fails to resolve, and anything sent to a proxy goes nowhere.
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
        "--window-size=700,1000", "--virtual-time-budget=15000", "--dump-dom", page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "</html>" in result.stdout, f"chromium failed:\n{result.stderr[-4000:]}"
    return result.stdout


def _probed_dom(browser: str, html: Path, name: str, tmp_path: Path):
    """The DOM (BeautifulSoup) of a copy of the page with the probe added, and the probe's report."""
    from bs4 import BeautifulSoup

    original = html / name
    probe = original.with_name("probe-" + original.name)       # same folder: relative links still work
    probe.write_text(original.read_text().replace("</body>", PROBE + "</body>"))
    dom = BeautifulSoup(_offline_dom(browser, probe, tmp_path / f"profile-{original.stem}"), "html.parser")
    found = dom.find(id="cxvae-probe")
    assert found is not None, "the probe script did not run (page scripts failed or timed out)"
    return dom, json.loads(found.get_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if not ON_CI:   # on CI the book extra is installed (scripts/test.sh): a missing one is an error there
        pytest.importorskip("jupyter_book", reason="the book extra is not installed (pip install -e .[book])")
    browser = _browser()
    tmp_path = tmp_path_factory.mktemp("tiny-book")
    html = _build_tiny_book(tmp_path)
    return {name: _probed_dom(browser, html, name, tmp_path) for name in ("pages/page.html", "pages/frame.html")}


def test_maths_renders_without_network(rendered):
    dom, probe = rendered["pages/page.html"]
    sources = [tag["src"] for tag in dom.find_all("script", src=True) if "mathjax" in tag["src"].lower()]
    article = dom.find("article") or dom.body
    # Five formulas: two inline, the $$ block, the {math} block and the align environment.
    containers = article.find_all("mjx-container")
    assert len(containers) >= 5, (f"expected 5 typeset formulas (mjx-container), found {len(containers)}; "
                                  f"MathJax loaded: {probe['mathjax']}, from {sources}")
    assert len(article.find_all("mjx-container", attrs={"display": "true"})) >= 3
    for tag in article.find_all(["script", "style", "mjx-assistive-mml"]):
        tag.decompose()
    text = article.get_text()
    for delimiter in ("\\(", "\\)", "\\[", "\\]", "$$", "\\begin{align}"):
        assert delimiter not in text, f"raw maths delimiter {delimiter!r} left in the page text"
    remote = [src for src in sources if src.startswith(("http:", "https:", "//"))]
    assert not remote, f"MathJax is loaded from the network: {remote}"


@pytest.mark.parametrize("name, kind", [("pages/page.html", "Markdown table"), ("pages/frame.html", "DataFrame")])
def test_wide_tables_scroll_inside_the_text_column(rendered, name, kind):
    dom, probe = rendered[name]
    assert any(link.get("href", "").split("?")[0].endswith("_static/cxvae.css") for link in dom.find_all("link")), \
        "the book's stylesheet (book/_static/cxvae.css) is not linked"
    assert probe["tables"], f"no table in {name}"
    for table in probe["tables"]:
        assert table["overflow_x"] == "auto", f"{kind} ({table['table_class']!r}) has no sideways-scrolling box"
        assert table["box_overflows"], f"{kind} should be wider than the 700px window's text column: {table}"
        assert table["box_right"] <= table["article_right"] + 1, f"{kind}'s scroll box runs past the text: {table}"
        # A scrollbar that takes room in the layout is drawn, not an overlay that shows only on hover.
        assert table["scrollbar_height"] > 0, f"{kind}'s scrollbar is not visible: {table}"
