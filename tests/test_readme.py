"""The README and the manual stay true: the README's commands are what CI runs, every `uhd-profile ...`
command shown in README.md and docs/commands.md runs and exits as shown, and the numbers the docs quote
(the reproduction snapshot, the whole-image example) equal what the code counts."""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from uhd_profile.count.paper import reproduce

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
COMMANDS_PAGE = ROOT / "docs" / "commands.md"
# The pages that hold the numbers checked below.
PAPER_PAGE = (ROOT / "docs" / "paper.md").read_text()
IMAGES_PAGE = (ROOT / "docs" / "images.md").read_text()


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert len(blocks) >= 2
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert main_job.endswith("uhd-profile sweep") and "pip install torch==2.13.0" in main_job
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_readme_stays_a_doorway():
    assert len(README.splitlines()) <= 150
    assert "--index-url https://download.pytorch.org/whl/cpu" in README
    for page in re.findall(r"\]\((docs/[\w.-]+\.md)\)", README):
        if page not in ("docs/api.md", "docs/schema.md"):  # written by others, possibly not yet here
            assert (ROOT / page).exists(), page
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / image).exists(), image


def test_snapshot_matches_counted_values():
    # docs/paper.md section 9: the reproduction table
    r = reproduce()
    for row in r.rows:
        assert f"{row.counted_gflops:.2f}" in PAPER_PAGE, row.figure
        assert f"{row.executed_gflops:.2f}" in PAPER_PAGE, row.figure
    assert f"{r.reduction['executed']:.2%}".replace("%", " %") in PAPER_PAGE
    assert f"{r.reduction['counted']:.2%}".replace("%", " %") in PAPER_PAGE


def test_image_llm_example_is_counted():
    # docs/images.md, "Through the LLM": a 3840x2160 image through Qwen3-8B; the LLM prefill over what
    # the LLM sees (the policy's llm_tokens: sliced 600, global 581), counted by the engine; the
    # vision figures are the table's
    from uhd_profile.analyse.cost import llm_stage_counts
    from uhd_profile.model.policies import get_policy

    tokens = {e: get_policy("minicpm-v-4.6").views(3840, 2160, encoding=e).llm_tokens for e in ("sliced", "global")}
    assert tokens == {"sliced": 600, "global": 581}
    sliced = llm_stage_counts("qwen3-8b", tokens["sliced"], 64, 0).prefill["macs"] / 1e9
    global_ = llm_stage_counts("qwen3-8b", tokens["global"], 64, 0).prefill["macs"] / 1e9
    assert f"{2178.2 + sliced:,.1f}" in IMAGES_PAGE and f"{sliced:,.1f}" in IMAGES_PAGE
    assert f"{9162.7 + global_:,.1f}" in IMAGES_PAGE and f"{3605.2 + global_:,.1f}" in IMAGES_PAGE
    assert f"{100 * 2178.2 / (2178.2 + sliced):.1f} %" in IMAGES_PAGE


# --- every command shown runs ------------------------------------------------------------------------

# Commands that take more than ~10 s (sweeps, measurements, memory plans, reports) or need a real run
# directory (made by the smoke sweep) run under `-m slow`.
SLOW_COMMANDS = {"bench", "report", "baseline", "check", "merge", "dataset"}
EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")


@dataclass(frozen=True)
class DocCommand:
    page: str
    line: int
    args: tuple[str, ...]
    exit_code: int

    @property
    def slow(self) -> bool:
        name = self.args[0]
        if name == "sweep":
            return "--dry-run" not in self.args
        if name == "plan":
            return "--max-memory" in self.args or "--max-gflops" in self.args
        if name == "e2e":
            return "--positions" in self.args
        if name == "image":
            return "--draw" in self.args or "--memory" in self.args
        return name in SLOW_COMMANDS

    @property
    def id(self) -> str:
        return " ".join(self.args)


def doc_commands(path: Path) -> list[DocCommand]:
    """`uhd-profile ...` lines of the ```console and ```bash blocks of a page: in console blocks the lines
    starting `$ uhd-profile`, in bash blocks also those starting `uhd-profile`. A trailing `# exit N` is
    the exit code the page shows."""
    found = []
    lines = path.read_text().splitlines()
    fence = None
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            continue
        if fence not in ("console", "bash"):
            continue
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:].strip()
        elif fence == "console":
            continue
        if not text.startswith("uhd-profile "):
            continue
        match = EXIT.search(text)
        code = int(match.group(1)) if match else 0
        args = tuple(shlex.split(text, comments=True))[1:]
        found.append(DocCommand(str(path.relative_to(ROOT)), number, args, code))
    return found


def all_doc_commands() -> list[DocCommand]:
    seen: dict[tuple[str, ...], DocCommand] = {}
    for page in (ROOT / "README.md", COMMANDS_PAGE):
        for command in doc_commands(page):
            seen.setdefault(command.args, command)
    return list(seen.values())


DOC_COMMANDS = all_doc_commands()


def test_the_pages_show_commands():
    pages = {c.page for c in DOC_COMMANDS}
    assert pages == {"README.md", "docs/commands.md"}, pages
    assert len([c for c in DOC_COMMANDS if c.page == "README.md"]) >= 5
    documented = {c.args[0] for c in DOC_COMMANDS}
    # every command of the group has an example, except merge (it needs shard runs)
    from uhd_profile.cli.main import cli as group

    assert set(group.commands) - documented <= {"merge"}, set(group.commands) - documented


def _images(where: Path) -> None:
    """The files the pages' examples name: a photo and a folder of them."""
    from PIL import Image

    Image.new("RGB", (1600, 1200), (120, 80, 40)).save(where / "photo.jpg")
    (where / "photos").mkdir()
    Image.new("RGB", (1600, 1200), (120, 80, 40)).save(where / "photos" / "a.jpg")
    Image.new("RGB", (3840, 2160), (10, 80, 40)).save(where / "photos" / "b.png")


@pytest.fixture(scope="module")
def workspace_template(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("doc-workspace")
    _images(where)
    return where


@pytest.fixture(scope="module")
def run_workspace_template(tmp_path_factory, smoke_sweep, workspace_template) -> Path:
    """Also `runs/ci` (a smoke run) and `.ci/smoke-baseline.json` (its counts-only baseline)."""
    where = tmp_path_factory.mktemp("doc-run-workspace") / "ws"
    shutil.copytree(workspace_template, where)
    smoke_sweep.copy(where / "runs" / "ci")
    (where / ".ci").mkdir()
    return where


def _run(cli, command: DocCommand, workspace: Path, monkeypatch) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("COLUMNS", "160")
    args = list(command.args)
    if args[0] == "sweep" and "--out" in args:  # the page's run directory is made by the command itself
        shutil.rmtree(workspace / args[args.index("--out") + 1], ignore_errors=True)
    if args[0] == "check" and "--baseline" in args:
        baseline = workspace / args[args.index("--baseline") + 1]
        if not baseline.exists():
            code, _, err = cli("baseline", args[1], "--out", str(baseline), "--counts-only")
            assert code == 0, err
    code, out, err = cli(*args)
    assert code == command.exit_code, f"{command.page}:{command.line}: {command.id} exited {code}\n{out[-2000:]}\n{err}"


@pytest.mark.parametrize("command", [c for c in DOC_COMMANDS if not c.slow], ids=lambda c: c.id)
def test_a_documented_command_runs(command, cli, workspace_template, tmp_path, monkeypatch):
    workspace = tmp_path / "ws"
    shutil.copytree(workspace_template, workspace)
    _run(cli, command, workspace, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in DOC_COMMANDS if c.slow], ids=lambda c: c.id)
def test_a_slow_documented_command_runs(command, cli, run_workspace_template, tmp_path, monkeypatch):
    workspace = tmp_path / "ws"
    shutil.copytree(run_workspace_template, workspace)
    _run(cli, command, workspace, monkeypatch)
