"""Every repository path a Markdown doc cites exists: a moved or renamed file cannot leave a doc pointing
at nothing (the README once cited `src/modelops/executors/factory.py`, which was
`src/modelops/worker/executor_factory.py`).

Two kinds of citation are checked, in every Markdown file of the repository outside hidden directories
(README.md, docs/, bench/, tests/, cluster/, charts/, images/, ...):
- relative Markdown links `[text](path)`, `[text](path.md#anchor)` and `[text](#anchor)`, resolved from the
  doc's directory; an anchor into a Markdown file must be one of its headings (GitHub's slugs);
- repository paths in the text, code spans and code blocks included: a word that starts with one of the
  top-level directories below (`src/modelops/settings.py`, `values/cold.yaml`, `bench/throughput_tls.*`),
  resolved from the repository's root. Globs must match at least one file. A word preceded by `/`, `.`,
  `$`, `~` or a letter (`/var/tmp/cluster/...`, `.cluster/env`, `oci://.../charts`) is not such a path.
CHANGELOG.md is history: it names files as they were then, and is not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Top-level directories whose paths docs cite; a word starting with one of them is a repository path.
CITED_ROOTS = ("src", "charts", "values", "cluster", "tests", "bench", "docs", "scripts", "images", "tools",
               "examples")
NOT_CHECKED = {"CHANGELOG.md"}

REPO_PATH = re.compile(
    r"(?<![\w./$~@:-])"                      # not the tail of another path, URL, variable or word
    rf"((?:{'|'.join(CITED_ROOTS)})/[\w./*+-]*)"
)
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
LINK_TARGET = re.compile(r"\]\([^)\n]*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def markdown_docs(root: Path) -> list[Path]:
    """The Markdown files of the repository, outside hidden directories (.git, .venv, .tools, .cluster)."""
    return sorted(
        p for p in root.rglob("*.md")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.relative_to(root).as_posix() not in NOT_CHECKED
    )


def _exists(base: Path, cited: str) -> bool:
    if any(c in cited for c in "*?["):
        return any(base.glob(cited))
    return (base / cited).exists()


def cited_paths(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line, repository path) and (line, relative link target) pairs cited by a Markdown text."""
    paths, links = [], []
    in_fence = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            paths += [(lineno, m) for m in _repo_paths(line)]
            continue
        if in_fence:
            paths += [(lineno, m) for m in _repo_paths(line)]
            continue
        prose = INLINE_CODE.sub("``", line)
        # a link's target is resolved from the doc's directory, not the root: only its text is scanned
        paths += [(lineno, m) for m in _repo_paths(LINK_TARGET.sub("]()", line))]
        for target in LINK.findall(prose):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                continue  # a URL (https:, mailto:, oci:)
            links.append((lineno, target.split("?", 1)[0]))
    return paths, links


def _repo_paths(line: str) -> list[str]:
    found = []
    for m in REPO_PATH.finditer(line):
        path = m.group(1).rstrip(".")  # a sentence's full stop, not part of the path
        if path.endswith("/*"):
            path = path[:-2]
        found.append(path)
    return found


def heading_anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces to
    hyphens, `-1`, `-2`... for repeats."""
    anchors, seen, in_fence = set(), {}, False
    for line in doc.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        heading = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def missing_paths(root: Path) -> list[str]:
    """`doc:line: path` for every cited path that does not exist under `root`."""
    missing = []
    for doc in markdown_docs(root):
        rel = doc.relative_to(root).as_posix()
        paths, links = cited_paths(doc.read_text())
        for lineno, path in paths:
            if not _exists(root, path):
                missing.append(f"{rel}:{lineno}: {path} (from the repository's root)")
        for lineno, link in links:
            target, _, anchor = link.partition("#")
            resolved = (doc.parent / target).resolve() if target else doc.resolve()
            inside = resolved == root.resolve() or root.resolve() in resolved.parents
            if target and (not inside or not _exists(doc.parent, target)):
                missing.append(f"{rel}:{lineno}: link {link} (from {doc.parent.relative_to(root).as_posix()}/)")
            elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
                missing.append(f"{rel}:{lineno}: link {link}: no heading with that anchor")
    return missing


def test_every_path_the_docs_cite_exists():
    docs = [d.relative_to(REPO).as_posix() for d in markdown_docs(REPO)]
    assert {"README.md", "bench/README.md", "charts/modelops-dask/README.md"} <= set(docs), docs
    missing = missing_paths(REPO)
    assert not missing, "docs cite paths that do not exist:\n" + "\n".join(missing)


def test_the_check_sees_a_planted_bad_path(tmp_path):
    (tmp_path / "src" / "modelops" / "worker").mkdir(parents=True)
    (tmp_path / "src" / "modelops" / "worker" / "executor_factory.py").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "run_1.json").write_text("{}")
    (tmp_path / "README.md").write_text(
        "The factory is `src/modelops/worker/executor_factory.py`; see [ok](docs/ok.md#back-to-top),\n"
        "[the site](https://example.org/x), [here](#a-section-bundles-), `bench/run_*.json`, `/var/tmp/cluster/x`,\n"
        "`.cluster/env` and `oci://ghcr.io/me/charts`.\n"
        "The factory was `src/modelops/executors/factory.py`.\n"
        "```sh\nbash scripts/missing.sh\n```\n"
        "Read [the other doc](docs/gone.md) and `bench/none_*.json`.\n"
        "## A section: `bundles` (!)\n"
        "[Missing](#no-such-section), [the doc](docs/ok.md#nowhere).\n"
    )
    (tmp_path / "docs" / "ok.md").write_text("# Back to top\nBack to [the README](../README.md); [broken](README.md).\n")
    assert missing_paths(tmp_path) == [
        "README.md:4: src/modelops/executors/factory.py (from the repository's root)",
        "README.md:6: scripts/missing.sh (from the repository's root)",
        "README.md:8: bench/none_*.json (from the repository's root)",
        "README.md:8: link docs/gone.md (from ./)",
        "README.md:10: link #no-such-section: no heading with that anchor",
        "README.md:10: link docs/ok.md#nowhere: no heading with that anchor",
        "docs/ok.md:2: link README.md (from docs/)",
    ]
