"""The operators' CustomResourceDefinitions the chart needs, fetched once into <repo>/.cache/tools/crds.

Only package registries are reachable, so each operator's CRD YAML comes from one, at the release the
offline schemas in ``../shared/k8s-schemas`` were made from (its README and SOURCES.tsv):

* **KServe** v0.20.0, **prometheus-operator** v0.93.0 and **KEDA** v2.20.2: their Go modules on the Go
  module proxy carry ``config/crd`` (``go mod download -json``, then the files are copied).
* **KubeRay**: the proxy refuses ``ray-operator@v1.7.0`` (403, "not available"), so v1.6.1 -- the
  newest version it serves -- is used. 1.7.0 only adds optional fields the chart does not set
  (historyServerOptions, ingressOptions, gcsFaultToleranceOptions.storage, ...).
* **Strimzi** 1.2.0 is Java and publishes no CRD files to a registry; Strimzi makes its release CRDs
  with its own ``crd-generator`` from its ``api`` classes, and both jars are on Maven Central. So Maven
  fetches them (libs/testkit/strimzi/pom.xml) and the generator writes the CRDs (it needs Java 21+).

Converted by the shared tool (``tools/crd2jsonschema.py``), every CRD but KubeRay's gives byte for
byte the schema in SOURCES.tsv; tests/k8s checks that.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from worldloom.testkit.k8s_tools import ToolInstallError, go_env, run_tool, tools_dir

_PACKAGE_DIR = Path(__file__).resolve().parent
STRIMZI_POM = _PACKAGE_DIR.parents[2] / "strimzi" / "pom.xml"  # libs/testkit/strimzi/pom.xml
STRIMZI_VERSION = "1.2.0"

#: (Go module, version, [paths of CRD files in the module])
GO_CRDS: list[tuple[str, str, list[str]]] = [
    ("github.com/kserve/kserve", "v0.20.0", ["config/crd/full/serving.kserve.io_inferenceservices.yaml"]),
    ("github.com/ray-project/kuberay/ray-operator", "v1.6.1",
     ["config/crd/bases/ray.io_rayclusters.yaml", "config/crd/bases/ray.io_rayjobs.yaml"]),
    ("github.com/prometheus-operator/prometheus-operator", "v0.93.0",
     [f"example/prometheus-operator-crd/monitoring.coreos.com_{p}.yaml"
      for p in ("servicemonitors", "podmonitors", "prometheusrules")]),
    ("github.com/kedacore/keda/v2", "v2.20.2", ["config/crd/bases/keda.sh_scaledobjects.yaml"]),
]
#: Strimzi API model class -> the file name Strimzi's release gives its CRD
STRIMZI_CRDS = {
    "io.strimzi.api.kafka.model.kafka.Kafka": "040-Crd-kafka.yaml",
    "io.strimzi.api.kafka.model.topic.KafkaTopic": "043-Crd-kafkatopic.yaml",
    "io.strimzi.api.kafka.model.nodepool.KafkaNodePool": "045-Crd-kafkanodepool.yaml",
}
#: the generator's arguments for Strimzi 1.x CRDs (only kafka.strimzi.io/v1 is served and stored)
STRIMZI_ARGS = ["--yaml", "--label", "app:strimzi", "--label", "strimzi.io/crd-install:true",
                "--crd-api-version", "v1", "--api-versions", "v1", "--storage-version", "v1"]


def _stamp() -> str:
    text = json.dumps([GO_CRDS, STRIMZI_CRDS, STRIMZI_ARGS, STRIMZI_POM.read_text()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def java_21() -> str:
    """A java of version 21 or later: $JAVA_HOME, PATH, then the JDKs in /usr/lib/jvm (this machine
    kind has a Temurin JDK beside OpenJDK 17)."""
    candidates = []
    if home := os.environ.get("JAVA_HOME"):
        candidates.append(Path(home) / "bin" / "java")
    if found := shutil.which("java"):
        candidates.append(Path(found))
    candidates += sorted(Path("/usr/lib/jvm").glob("*/bin/java"), reverse=True)
    for java in candidates:
        try:
            out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30).stderr
        except OSError:
            continue
        match = re.search(r'version "(\d+)', out)
        if match and int(match.group(1)) >= 21:
            return str(java)
    raise ToolInstallError("Strimzi's CRD generator needs Java 21 or later; none found in JAVA_HOME, PATH or "
                           "/usr/lib/jvm (apt-get install openjdk-21-jre-headless, or set JAVA_HOME)")


def _fetch_go(out: Path, work: Path) -> None:
    for module, version, paths in GO_CRDS:
        info = json.loads(run_tool(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=work, env=go_env(),
                               timeout=1800))
        if info.get("Error"):
            raise ToolInstallError(f"go mod download {module}@{version}: {info['Error']}")
        for path in paths:
            shutil.copyfile(Path(info["Dir"]) / path, out / Path(path).name)


def _generate_strimzi(out: Path, work: Path) -> None:
    if shutil.which("mvn") is None:
        raise ToolInstallError("Maven ('mvn') is needed once to fetch Strimzi's CRD generator; it is not on PATH")
    jars = work / "strimzi"
    run_tool(["mvn", "-q", "-B", "-f", str(STRIMZI_POM), "dependency:copy-dependencies", f"-DoutputDirectory={jars}",
          "-DincludeScope=runtime"], timeout=900)
    targets = [f"{cls}={out / name}" for cls, name in STRIMZI_CRDS.items()]
    run_tool([java_21(), "-cp", f"{jars}/*", "io.strimzi.crdgenerator.CrdGenerator", *STRIMZI_ARGS, *targets],
         timeout=300)


def ensure_crds() -> Path:
    """The folder with every CRD the chart needs (one YAML file each), fetching them if missing or stale."""
    root = tools_dir() / "crds"
    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == _stamp():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".crds.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == _stamp():
            return root
        with tempfile.TemporaryDirectory(prefix=".crds-", dir=root.parent) as tmp:
            staged = Path(tmp) / "crds"
            staged.mkdir()
            _fetch_go(staged, Path(tmp))
            _generate_strimzi(staged, Path(tmp))
            (staged / ".complete").write_text(_stamp())
            shutil.rmtree(root, ignore_errors=True)
            staged.replace(root)
    return root


def crd_files() -> list[Path]:
    return sorted(ensure_crds().glob("*.yaml"))
