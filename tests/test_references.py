"""Every file the repository's texts point at is in the repository (a fresh clone needs nothing else)."""
import re

from conftest import ROOT

OUTSIDE = {".git", "runs", "build", "dist"}  # top-level folders that are not the repository's texts
TEXTS = [p for p in ROOT.rglob("*") if p.is_file() and p.relative_to(ROOT).parts[0] not in OUTSIDE
         and not any(part.endswith(".egg-info") for part in p.parts)
         and (p.suffix in (".md", ".py", ".yaml", ".ipynb", ".toml") or p.parent.name == ".ci")]
# a path inside the repository: starts with one of its top-level folders; globs and placeholders are skipped
REPO_PATH = re.compile(r"(?<![\w/.-])(?:\./)?((?:docs|benchmarks|configs|assets|lit_featinv|tests|notebooks|\.ci)/"
                       r"[\w./-]*\w)")


def test_every_referenced_repository_file_exists():
    missing = []
    for text in TEXTS:
        content = text.read_text(errors="ignore")
        for match in REPO_PATH.finditer(content):
            path = match.group(1)
            if content[match.end():match.end() + 1] in ("*", "{", "<"):  # a glob or a placeholder
                continue
            if re.search(r"\b[0-9a-f]{7,40}:$", content[:match.start()]):  # a file at a commit (git show REV:PATH)
                continue
            if not (ROOT / path).exists() and not (ROOT / path.split("::")[0]).exists():
                missing.append(f"{text.relative_to(ROOT)}: {path}")
    assert not missing, missing
    assert (ROOT / "docs" / "method.md").is_file()


def test_nothing_points_outside_the_repository():
    outside = [f"{text.relative_to(ROOT)}: {m.group(0)}" for text in TEXTS if text.name != "test_references.py"
               for m in re.finditer(r"\.\./shared|/work/", text.read_text(errors="ignore"))]
    assert not outside, outside
