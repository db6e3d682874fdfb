"""README.md's and docs/*.md's Python examples run, so they cannot rot; README keeps its shape.

Every ```python block of README.md and of each docs/*.md page is extracted and executed in this process,
offline, on CPU (the shipped toy models load by name with no download). A page's blocks run in order in
one namespace, as a reader would paste them into one session, with the working directory a temporary one.
To keep this fast, `Sampler.from_pretrained` is memoized over the pages (equal arguments share one Sampler)
and torch runs on one thread: the examples' batches are tiny, and on a busy machine a second thread's
waits made a step ~15x slower.

Skipping a block: write `<!-- no-run: REASON -->` on the line just before its fence (an HTML comment, so
neither GitHub nor the docs site shows it). Keep that for blocks that need a GPU, a server, the network or
a hub model; the reason is required, and the set is bounded below so that skipping stays the exception.
"""
from __future__ import annotations

import contextlib
import io
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)$")
NO_RUN = re.compile(r"^\s*<!--\s*no-run:(?P<reason>.*?)-->\s*$")
MAX_NO_RUN = 4  # skipped blocks in README and docs together


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(first line number, code, no-run reason or None) of each ```python block of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, info = i, m["info"].strip()
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        if info.split("{")[0].strip() == "python":
            previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            skip = NO_RUN.match(previous)
            code = textwrap.dedent("\n".join(lines[start + 1:i]))
            blocks.append((start + 2, code, skip["reason"].strip() if skip else None))
        i += 1
    return blocks


def runnable_pages() -> list[Path]:
    return [p for p in PAGES if any(reason is None for _, _, reason in python_blocks(p))]


@pytest.fixture(scope="module")
def shared_loads():
    """Sampler.from_pretrained memoized for this module's tests (the examples load the same toy models)."""
    import torch

    from budget_sampler import Sampler

    original, loaded, threads = Sampler.__dict__["from_pretrained"], {}, torch.get_num_threads()
    torch.set_num_threads(1)

    def from_pretrained(cls, *args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = original.__func__(cls, *args, **kwargs)
        return loaded[key]

    Sampler.from_pretrained = classmethod(from_pretrained)
    yield
    Sampler.from_pretrained = original
    torch.set_num_threads(threads)
    for sampler in loaded.values():
        sampler.close()


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(page: Path, tmp_path, monkeypatch, shared_loads):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for line, code, reason in python_blocks(page):
        if reason is not None:
            continue
        name = f"{page.relative_to(ROOT).as_posix()}:{line}"
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, name, "exec"), namespace)  # noqa: S102 - our own documentation's examples


def test_skipped_blocks_say_why_and_stay_few():
    skipped = [(p.name, line, reason) for p in PAGES for line, _, reason in python_blocks(p) if reason is not None]
    assert all(reason for _, _, reason in skipped), f"a no-run comment without a reason: {skipped}"
    assert len(skipped) <= MAX_NO_RUN, f"{len(skipped)} skipped blocks (at most {MAX_NO_RUN}): {skipped}"


def test_python_fences_are_spelled_python():
    """A fence spelled ```py or ```Python would be silently left out: only ```python counts."""
    for page in PAGES:
        infos = [m["info"].strip() for m in map(FENCE.match, page.read_text(encoding="utf-8").splitlines()) if m]
        assert not [i for i in infos if i.lower() in ("py", "python3", "pycon") or i == "Python"], page.name


def test_readme_is_short_and_starts_with_the_two_setup_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    head = lines[:20]
    assert "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e . && .venv/bin/budget-sampler eval" in head
    assert ("python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e '.[test]' "
            "&& .venv/bin/python -m pytest -q") in head
