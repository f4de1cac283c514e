"""Reports: built from golden run directories and a real smoke sweep; the HTML opened in headless Chromium.

Golden run directories (tests/golden/):
* ``paper-counts``: the 11 counted (FLOPs-only) records of a real ``uhd-profile sweep paper`` run at
  980 px: every configuration behind the paper's figures, no latency (a partial, counts-only run).
* ``global-vs-sliced``: hand-written records with ``encoding`` global/sliced (synthetic numbers, the
  shape a slicing run will have), one of them flagged noisy.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from uhd_profile.analyse import report as R
from uhd_profile.analyse.report import format as F
from uhd_profile.analyse.report import tables as T
from uhd_profile.count.paper import PAPER_FIGURES
from uhd_profile.errors import UhdProfileError
from uhd_profile.run.store import load

GOLDEN = Path(__file__).parent / "golden"
PAPER_COUNTS = GOLDEN / "paper-counts"
SLICED = GOLDEN / "global-vs-sliced"


@pytest.fixture(scope="module")
def counts_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("counts-report")
    return out, R.write_report(PAPER_COUNTS, out)


@pytest.fixture(scope="module")
def sliced_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sliced-report")
    return out, R.write_report(SLICED, out, recount=False)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory, smoke_sweep):
    run = smoke_sweep.copy(tmp_path_factory.mktemp("smoke") / "run")
    return run, R.write_report(run, recount=False)


def _csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name)


def _figures_complete(out: Path, written: dict, names: set[str]) -> None:
    for name in names:
        for ext in ("png", "svg", "csv"):
            p = out / "figures" / f"{name}.{ext}"
            assert written[f"figures/{name}.{ext}"] == str(p) and p.stat().st_size > 0, p
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / "figures" / f"{name}.svg").read_bytes()[:2000]
    drawn = {k.split("/")[1].rsplit(".", 1)[0] for k in written if k.startswith("figures/")}
    assert drawn == names


# -- pure functions ---------------------------------------------------------------------------


def test_pareto_front_lower_is_better_on_both():
    # (1,5) and (2,2) and (4,1) trade off; (3,3) is beaten by (2,2); the duplicate (2,2) ties, not dominates
    assert R.pareto_front([1, 2, 3, 4, 2], [5, 2, 3, 1, 2]) == [True, True, False, True, True]


def test_variant_labels():
    row = pd.Series(
        {"compressor": "window-attn-reused-mlp", "depth": 6, "post_ratio": 4, "encoding": "sliced", "packing": "packed"}
    )
    assert F.variant_label(row) == "window-attn-reused-mlp@6 +post4 [sliced, packed]"
    assert F.variant_label(row.copy().replace({"packed": "batched"})) == "window-attn-reused-mlp@6 +post4 [sliced]"
    assert F.variant_label(pd.Series({"compressor": None, "depth": pd.NA, "post_ratio": 1, "encoding": "view"})) == "baseline"
    assert T._aspect(1344, 756) == "16:9" and T._aspect(980, 980) == "1:1"


def test_flags_mark_noisy_and_throttled_points():
    df = load(SLICED)
    df.loc[0, "throttled_fraction"] = 0.25
    d = R.prepare(df)
    assert d["flagged"].sum() == 3  # the throttled one, the noisy sliced one, the unreliable 224 px one
    assert d.loc[0, "flag_reason"] == "throttled 25% of the time"
    assert set(d.loc[d["flagged"], "noise_flag"]) == {"ok", "noisy", "unreliable"}


def test_a_steady_slowdown_is_flagged_as_a_slow_outlier():
    # a point 10x slower than its peers with a tight spread: the noise flag cannot see it
    df = load(SLICED)
    i = df.index[df["variant_id"] == "siglip2-so400m-p14@224x224/baseline/post1"][0]
    assert not R.prepare(df).loc[i, "flagged"]
    df.loc[i, "latency_median_s"] = df.loc[i, "latency_median_s"] * 10
    d = R.prepare(df)
    assert d.loc[i, "flagged"] and d.loc[i, "slowdown"] > T.SLOW_OUTLIER_FACTOR
    assert "slow outlier" in d.loc[i, "flag_reason"] and d["flagged"].sum() == 3  # it, the noisy and the unreliable one
    hl = R.headline(df)
    assert hl.loc[hl["convention"] == "seconds", "flagged"].all()


def test_headline_from_the_counts_is_the_papers_reduction():
    hl = R.headline(load(PAPER_COUNTS))
    flops = hl[hl["convention"] == "paper"].iloc[0]
    # 1 - 1573.09 / 3555.07 GFLOPs, counted at 980 px
    assert flops["resolution"] == "980 px" and flops["reduction"] == pytest.approx(0.5575, abs=5e-4)
    assert flops["paper_reduction"] == 0.5575
    assert (hl["convention"] == "seconds").sum() == 0  # counts only: no latency row


def test_reproduction_table_takes_the_run_and_recounts_what_it_lacks():
    df = load(PAPER_COUNTS)
    t = R.reproduction_table(df, recount=False)
    assert len(t) == len(PAPER_FIGURES) and set(t["source"]) == {"run"} and t["ok"].all()
    dropped = df[df["variant_id"] != PAPER_FIGURES[8].spec().id]  # depth 3 leaves the run
    t2 = R.reproduction_table(dropped, recount=False)
    assert t2.loc[8, "source"] == "not in run" and pd.isna(t2.loc[8, "counted_paper_flops"])
    t3 = R.reproduction_table(dropped, recount=True)  # counted now, ~2 s
    assert t3.loc[8, "source"] == "recounted" and t3.loc[8, "counted_paper_flops"] == t.loc[8, "counted_paper_flops"]


# -- whole reports ------------------------------------------------------------------------------


def test_counts_only_report(counts_report):
    out, written = counts_report
    md = (out / "report.md").read_text()
    _figures_complete(out, written, {"quality_fronts", "pareto_tokens", "depth_sweep", "breakdown", "e2e_stages"})
    repro = _csv(out, "tables/reproduction.csv")
    assert len(repro) == 12 and repro["ok"].all() and set(repro["source"]) == {"run"}
    assert "| Win-Attn w/ Reused MLP = LLaVA-UHD v4 (Fig. 2, Tab. 4c, A3) | 1,573.1 | 1,573.09 |" in md
    assert "55.75%" in md and "55.8%" in md
    # what has no data is left out with a sentence saying so
    assert "FLOPs vs latency: left out" in md and "No latency was measured in this run" in md
    assert "Left out: the run holds no global- or sliced-encoding points" in md
    # the breakdown recount adds up to the run's totals, per category
    bd = _csv(out, "figures/breakdown.csv")
    assert set(bd["category"]) <= set(F.CATEGORIES) and "MISMATCH" not in md
    v4 = bd[bd["variant"].str.startswith("v4")]
    assert v4.loc[v4["category"] == "compressor", "block"].eq("compressor").all()
    assert list(v4.drop_duplicates("block").sort_values("order")["block"])[:9] == (
        ["embedding"] + [f"layer {i}" for i in range(7)] + ["compressor"]
    )
    assert not (out / "figures" / "pareto_latency.png").exists()


def test_breakdown_total_equals_the_run(counts_report):
    out, _ = counts_report
    df = load(PAPER_COUNTS)
    bd = _csv(out, "figures/breakdown.csv")
    run = dict(zip(df["variant_id"], df["paper_flops"]))
    assert bd[bd["variant"] == "baseline"]["paper"].sum() == run["siglip2-so400m-p14@980x980/baseline/post1"]
    assert bd[bd["variant"] != "baseline"]["paper"].sum() == run["siglip2-so400m-p14@980x980/window-attn-reused-mlp@6/post1"]


def test_global_vs_sliced_report_marks_flagged_points_everywhere(sliced_report):
    out, written = sliced_report
    md = (out / "report.md").read_text()
    _figures_complete(out, written, {"quality_fronts", "pareto_latency", "pareto_tokens", "global_vs_sliced", "breakdown"})
    gs = _csv(out, "figures/global_vs_sliced.csv")
    assert set(gs["encoding"]) == {"global", "sliced"} and len(gs) == 16 and gs["flagged"].sum() == 1
    # the noisy sliced point carries the mark in the section-5 table and the quality table
    assert re.search(r"\| sliced \| window-attn-reused-mlp@6 \+post4 \| batched \| 1920x1080 \|.*⚠ \|", md)
    assert re.search(r"\| window-attn-reused-mlp@6 \+post4 \[sliced\] \| 1920x1080 px \|.*\| ⚠ noisy \|", md)
    # the unreliable single-view v4 point: in the headline, both Pareto figures' data, the quality table
    hl = _csv(out, "tables/headline.csv")
    lat = hl[hl["convention"] == "seconds"].iloc[0]
    assert lat["flagged"] and lat["reduction"] == pytest.approx(1 - 0.071 / 0.120)
    assert re.search(r"\| latency, median of forward passes \| 224 px \|.*\| 40\.83% ⚠ \|", md)
    for fig in ("pareto_latency", "pareto_tokens"):
        data = _csv(out, f"figures/{fig}.csv")
        assert data.loc[data["label"] == "window-attn-reused-mlp@6", "flagged"].all() and data["flagged"].sum() == 1
        assert "⚠ flagged latency (noisy, throttled or slow outlier)" in (out / "figures" / f"{fig}.svg").read_text()
    assert "⚠ flagged latency (noisy, throttled or slow outlier)" in (out / "figures" / "global_vs_sliced.svg").read_text()
    assert re.search(r"\| window-attn-reused-mlp@6 \| 224 px \|.*\| ⚠ unreliable \|", md)
    assert "not in run" in md  # recount off: said so, not invented
    assert "MISMATCH" not in md  # the breakdown recount equals the run's counts


def test_smoke_sweep_report(smoke_report):
    run, written = smoke_report
    out = run / "report"
    md = (out / "report.md").read_text()
    assert written["md"] == str(out / "report.md") and written["html"] == str(out / "report.html")
    _figures_complete(out, written, {"quality_fronts", "pareto_latency", "pareto_tokens", "breakdown", "e2e_stages"})
    hl = _csv(out, "tables/headline.csv")
    # the smoke recipe measures baseline +post16 and v4 +post4: no same-ratio pair to compare latency on
    assert "latency, median of forward passes" not in set(hl["quantity"])
    assert "the run measured no latency of a baseline/v4 pair" in md and "not this setting" in md
    assert "depth 1 (the run holds no depth-6 point" in md
    q = _csv(out, "tables/measurement_quality.csv")
    assert len(q) == len(load(run).query("latency_median_s.notna()"))
    env = _csv(out, "tables/environment.csv")
    assert "torch" in set(env["field"]) and "hostname" not in set(env["field"])
    # section 7 from the run's points with an LLM (tiny-llm), one of them timed stage by stage
    e2e = _csv(out, "tables/e2e.csv")
    assert "## 7. End to end" in md and set(e2e["source"]) == {"run"} and set(e2e["llm"]) == {"tiny-llm"}
    assert len(e2e) == 4 and e2e["ttft_s"].notna().sum() == 1


def test_a_run_with_no_usable_points_still_renders(tmp_path):
    # one failed point and nothing else: every section says what it leaves out
    lines = (SLICED / "results.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec.update(status="oom", metrics=None, error="OutOfMemoryError: CUDA out of memory")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.jsonl").write_text(lines[0] + "\n" + json.dumps(rec) + "\n")
    written = R.write_report(tmp_path / "run", recount=False)
    md = Path(written["md"]).read_text()
    assert "1 points (0 ok, 1 failed)" in md and "Not available: the run holds no pair" in md
    assert "OutOfMemoryError" in md and not any(k.startswith("figures/") for k in written)


def test_html_is_self_contained(sliced_report):
    out, _ = sliced_report
    page = (out / "report.html").read_text()
    assert page.count("data:image/svg+xml;base64,") == 5
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    import matplotlib

    assert matplotlib.rcParams["svg.hashsalt"] is None  # report styling never leaks into global rcParams


def test_formats_and_errors(tmp_path):
    with pytest.raises(UhdProfileError, match=r"--format 'pdf' is not valid; valid: md, html"):
        R.parse_formats("md,pdf")
    with pytest.raises(UhdProfileError, match=r"run directory '.*nope' does not exist"):
        R.write_report(tmp_path / "nope")


def test_cli_report(cli, tmp_path):
    code, out, err = cli("report", str(tmp_path / "missing"))
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
    code, out, err = cli("report", str(SLICED), "--format", "pdf")
    assert code == 2 and err.strip() == "error: --format 'pdf' is not valid; valid: md, html (comma-separated, e.g. md,html)"
    code, out, err = cli("report", str(SLICED), "--out", str(tmp_path / "r"), "--format", "md", "--no-recount")
    assert code == 0, err
    assert (tmp_path / "r" / "report.md").exists() and not (tmp_path / "r" / "report.html").exists()
    assert "5 figures" in out and "report.html" not in out


# -- a real browser ----------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)


@pytest.fixture(scope="module")
def browser():
    missing = not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists())
    if missing and os.environ.get("CI"):  # .ci/run installs them: there a skip would hide a broken report
        pytest.fail("CI must run the browser test: chromium / chromedriver are missing")
    if missing:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium chromium-driver)")
    if os.environ.get("CI"):
        import selenium.webdriver as webdriver
    else:
        webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _visible(png: bytes) -> float:
    """Fraction of a screenshot's pixels that are not (near) white."""
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    return float((img.min(axis=-1) < 0.9).mean())


REFERENCE = Path(__file__).resolve().parent.parent / "reports" / "paper-reproduction"


@pytest.fixture(scope="module")
def reference_report():
    if not (REFERENCE / "report.html").exists():
        pytest.skip("no committed reference report")
    return REFERENCE, None


def test_committed_reference_report_reproduces_the_paper():
    if not (REFERENCE / "tables" / "reproduction.csv").exists():
        pytest.skip("no committed reference report")
    repro = _csv(REFERENCE, "tables/reproduction.csv")
    assert len(repro) == len(PAPER_FIGURES) and repro["ok"].all() and set(repro["source"]) == {"run"}
    hl = _csv(REFERENCE, "tables/headline.csv")
    assert hl.loc[hl["convention"] == "paper", "reduction"].iloc[0] == pytest.approx(0.5575, abs=5e-4)
    assert {"md", "html"} <= {p.suffix[1:] for p in REFERENCE.iterdir()}
    for png in (REFERENCE / "figures").glob("*.png"):
        assert png.with_suffix(".svg").exists() and png.with_suffix(".csv").exists()
    size = sum(p.stat().st_size for p in REFERENCE.rglob("*") if p.is_file())
    assert size < 3e6, f"the reference report is {size / 1e6:.1f} MB"
    from uhd_profile.analyse.report.render import REPORT_MARKER  # lets the next `report --out` replace it whole

    files = [p for p in REFERENCE.rglob("*") if p.is_file() and p.name != REPORT_MARKER]
    assert {p.suffix for p in files} <= {".md", ".html", ".png", ".svg", ".csv"}


@pytest.mark.parametrize("which", ["counts_report", "sliced_report", "reference_report"])
def test_report_renders_in_chromium(browser, which, request, tmp_path_factory):
    out, _ = request.getfixturevalue(which)
    browser.get((out / "report.html").resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.title.startswith("uhd-profile report")
    figures = browser.find_elements("css selector", "figure img")
    assert len(figures) == len(list((out / "figures").glob("*.svg")))
    for img in figures:
        browser.execute_script("arguments[0].scrollIntoView()", img)
        ok, width, shown = browser.execute_script(
            "const i = arguments[0]; return [i.complete, i.naturalWidth, i.getBoundingClientRect().width]", img
        )
        assert ok and width > 300 and shown > 300, img.get_attribute("alt")
        # a figure wider than the page is shrunk until its text is unreadable: keep it near its own size
        assert shown >= 0.8 * width, f"{img.get_attribute('alt')}: {width} px wide, shown at {shown:.0f} px"
        assert _visible(img.screenshot_as_png) > 0.02, f"{img.get_attribute('alt')} is blank in the screenshot"
    # every section: a screenshot of it (kept for a human to look at), nothing wider than the page,
    # no two text boxes overlapping, and the table of contents points at it
    page_width = browser.execute_script("return document.documentElement.clientWidth")
    sections = browser.find_elements("css selector", "section")
    toc = browser.execute_script("return [...document.querySelectorAll('nav.toc a')].map(a => a.getAttribute('href'))")
    assert sections and toc == [f"#{s.get_attribute('id')}" for s in sections]
    shots = tmp_path_factory.mktemp(f"sections-{which}")
    for s in sections:
        browser.execute_script("arguments[0].scrollIntoView()", s)
        png = s.screenshot_as_png
        (shots / f"{s.get_attribute('id')}.png").write_bytes(png)
        assert _visible(png) > 0.005, f"section {s.get_attribute('id')} is blank"
        wide = browser.execute_script(
            "return [...arguments[0].querySelectorAll('figure img, div.table, p, h2, h3')]"
            ".filter(e => e.getBoundingClientRect().right > arguments[1] + 1).map(e => e.outerHTML.slice(0, 80))",
            s,
            page_width,
        )
        assert not wide, f"wider than the page in {s.get_attribute('id')}: {wide}"
        overlaps = browser.execute_script(
            """
            const els = [...arguments[0].querySelectorAll('h2, h3, p, figcaption, figure img, th, td, div.table')];
            const out = [];
            for (let i = 0; i < els.length; i++) for (let j = i + 1; j < els.length; j++) {
              const a = els[i], b = els[j];
              if (a.contains(b) || b.contains(a)) continue;
              const r = a.getBoundingClientRect(), q = b.getBoundingClientRect();
              const w = Math.min(r.right, q.right) - Math.max(r.left, q.left);
              const h = Math.min(r.bottom, q.bottom) - Math.max(r.top, q.top);
              if (w > 1 && h > 1) out.push(a.tagName + ' / ' + b.tagName + ': ' + (a.textContent || '').slice(0, 40));
            }
            return out;""",
            s,
        )
        assert not overlaps, f"overlapping text boxes in {s.get_attribute('id')}: {overlaps[:5]}"
    # nothing loaded from outside the page itself
    sources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(s.startswith("data:") for s in sources), sources
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, json.dumps(errors)


# -- quality against cost, and readable figures ---------------------------------------------


def test_default_report_draws_the_papers_quality_against_counted_flops(counts_report):
    out, written = counts_report
    assert {"figures/quality_fronts.png", "figures/quality_fronts.svg", "figures/quality_fronts.csv"} <= set(written)
    q = _csv(out, "tables/quality_paper.csv")
    assert len(q) == 11 and set(q["cost_source"]) == {"run"}
    v4 = q[q["design"] == "window-attn-reused-mlp@6"].iloc[0]
    # the reported score next to our count of the same configuration (and the paper's own GFLOPs)
    assert (
        v4["avg"] == 70.7 and v4["paper_flops"] == load(PAPER_COUNTS).set_index("variant_id").loc[v4["variant_id"], "paper_flops"]
    )
    assert v4["reported_gflops"] == 1573.1
    md = (out / "report.md").read_text()
    # the paper's own disagreements stay visible
    assert "38.76" in md and "69.85" in md and "paper-reported" in md
    # counted FLOPs put k=3 on the front, and a design that costs more for less (reused-mlp) off it
    front = dict(zip(q["design"], q["pareto_paper_flops"]))
    assert front["window-attn-reused-mlp@6"] and not front["reused-mlp@6"] and not front["baseline"]


def _scores_csv(path: Path) -> str:
    path.write_text(
        "compressor,depth,mmmu,mathvista,mmbench_en,mmbench_cn,mmstar,hallusionbench,ai2d,ocrbench\n"
        "none,,50,50,50,50,50,50,50,50\n"
        "window-attn-reused-mlp,6,52,52,52,52,52,52,52,52\n"
        "avg-pool,6,40,40,40,40,40,40,40,40\n"
        "avg-pool,9,60,60,60,60,60,60,60,60\n"  # not in the run: listed as a score without a point
    )
    return str(path)


def test_report_with_your_scores_draws_them_next_to_the_papers(tmp_path, cli):
    from tests.test_quality import ALL_TASKS, lmms

    csv = _scores_csv(tmp_path / "scores.csv")
    results = tmp_path / "2026_results.json"
    results.write_text(json.dumps(lmms(ALL_TASKS)))
    out = tmp_path / "report"
    code, stdout, err = cli(
        "report", str(PAPER_COUNTS), "--out", str(out), "--quality", csv, "--quality", f"{results}=cross-attn-topleft@6"
    )
    assert code == 0, err
    yours = _csv(out, "tables/quality_yours.csv")
    assert sorted(yours["design"]) == ["avg-pool@6", "avg-pool@9", "baseline", "cross-attn-topleft@6", "window-attn-reused-mlp@6"]
    by = yours.set_index("design")
    assert by.loc["window-attn-reused-mlp@6", "avg"] == 52.0 and by.loc["cross-attn-topleft@6", "avg"] == pytest.approx(70.675)
    assert by.loc["avg-pool@9", "cost_source"] == "recounted" and by.loc["avg-pool@6", "cost_source"] == "run"
    missing = _csv(out, "tables/quality_missing.csv")
    assert ((missing["kind"] == "quality-without-run") & (missing["depth"] == 9)).sum() == 1
    assert (missing["kind"] == "run-without-quality").sum() == 11 - 4
    drawn = _csv(out, "figures/quality_fronts.csv")
    assert set(drawn["scores"]) == {"paper-reported", "yours"}
    md = (out / "report.md").read_text()
    assert "Filled markers are your scores" in md
    assert "textvqa_val are not among the eight benchmarks" in md  # what was ignored is said, in a banner


def test_a_bad_score_file_is_one_line_before_any_work(tmp_path, cli):
    bad = tmp_path / "bad.csv"
    bad.write_text("compressor,mmmu\navg-pool,not-a-number\n")
    code, _, err = cli("report", str(PAPER_COUNTS), "--out", str(tmp_path / "r"), "--quality", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(bad) in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("run", [PAPER_COUNTS, SLICED])
def test_figures_keep_legends_off_data_and_labels_apart(run):
    """Every figure of a report: no legend over a data marker, no overlapping text, nothing outside."""
    from uhd_profile.analyse.report.figures import layout_problems

    rep = R.build_report(run, recount=False)
    assert rep.figures
    for f in rep.figures:
        assert layout_problems(f.fig) == [], f.name


def test_report_has_contents_anchors_and_one_glossary(counts_report):
    out, _ = counts_report
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    anchors = re.findall(r'<section id="([^"]+)">', html)
    assert len(anchors) >= 7 and all(f'href="#{a}"' in html for a in anchors)
    assert len(re.findall(r"^## \d+\. ", md, flags=re.M)) == len(anchors) and "Contents: [1. Headline" in md
    assert anchors[-1].endswith("conventions-and-terms")
    # each convention's full definition appears once, in the glossary, not in every caption
    from uhd_profile.count.conventions import CONVENTIONS

    for c in CONVENTIONS.values():
        assert md.count(c.meaning) == 1, c.name
