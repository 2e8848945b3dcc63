"""The README's set-up commands are what CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n\s*(.+?)\n\s*```", section, re.S)
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command.strip() in (line.strip() for line in ci), f".ci/run does not run: {command}"


def test_ci_runs_them_as_a_user_and_compiles_cuda_apart():
    """No EMBER_* variable reaches the README's commands (CI once exported EMBER_CUDA=1 and so
    never met the build a user gets), and the sm_90a compile is a step of its own."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert not re.search(r"^\s*export\s+EMBER_", ci, re.M), "CI must not export EMBER_* variables"
    assert re.search(r"^for var in .*EMBER_.*unset", ci, re.M), "CI must clear EMBER_* variables first"
    assert re.search(r"^EMBER_CUDA=1 pip wheel .*-C build-dir=build/cuda", ci, re.M)
    assert "--cuda-library=" in ci


def _links(path: pathlib.Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()) if "://" not in t]


def test_readme_is_a_page_a_newcomer_scans():
    """At most 200 lines: what ember is, the two commands, a short example per way in, links."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_every_link_of_the_readme_and_the_guides_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = [f"{p.name}: {t}" for p in pages for t in _links(p) if not (p.parent / t).exists()]
    assert not missing, missing


def test_the_readme_links_every_guide():
    linked = {(ROOT / t).resolve() for t in _links(ROOT / "README.md")}
    assert not [p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in linked]
