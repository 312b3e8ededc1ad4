"""The documentation site: it builds with warnings as errors (broken links, missing anchors, pages
left out of the navigation, API entries that do not resolve), and its home page is the README."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    for docstring in ("Run (or resume, or skip if finished) one strong-ticket search",
                      "What the training loop calls besides training", "Batches of"):
        assert docstring in reference, docstring  # generated from the code's docstrings


def test_the_sites_home_is_the_readme_with_its_links_inside_docs():
    readme = (ROOT / "README.md").read_text()
    home = (ROOT / "docs" / "index.md").read_text()
    assert home == readme.replace("](docs/", "](")
    assert readme.startswith("# supermask\n\n```bash\npip install -c constraints.txt -e \".[dev]\"")
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).exists(), target
