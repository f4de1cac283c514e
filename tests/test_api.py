"""The public API is curated and light, and docs/api.md's session is what the code returns."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest

import uhd_profile

ROOT = Path(__file__).resolve().parent.parent
CURATED = {
    "VariantSpec",
    "build_variant",
    "count_flops",
    "FlopCount",
    "CONVENTIONS",
    "Size",
    "get_policy",
    "cost_item",
    "ItemCost",
    "LlmSettings",
    "MemorySettings",
    "count_llm",
    "PipelineSpec",
    "count_pipeline",
    "predict_memory",
    "Planner",
    "bench",
    "BenchSettings",
    "TimingSettings",
    "load",
    "write_report",
    "read_quality",
    "join_quality",
    "UhdProfileError",
    "__version__",
}


def test_the_public_api_is_the_curated_list():
    assert set(uhd_profile.__all__) == CURATED and len(uhd_profile.__all__) == len(CURATED)
    for name in CURATED:
        assert getattr(uhd_profile, name) is not None, name
    with pytest.raises(AttributeError):
        _ = uhd_profile.cost_image  # the old two roads are gone


def test_importing_the_package_imports_no_heavy_dependency():
    code = "import sys, uhd_profile; print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_curated_name_is_documented():
    doc = (ROOT / "docs" / "api.md").read_text()
    for name in CURATED - {"__version__"}:
        assert f"`{name}`" in doc, name


@pytest.mark.slow
def test_the_docs_session_runs(smoke_sweep):
    # the fences end an example's expected output, as a blank line would
    text = "\n".join("" if line.startswith("```") else line for line in (ROOT / "docs" / "api.md").read_text().splitlines())
    test = doctest.DocTestParser().get_doctest(text, {"run_dir": str(smoke_sweep.run)}, "api.md", "docs/api.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 15 and result.failed == 0
