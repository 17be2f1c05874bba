"""A real Kubernetes control plane on 127.0.0.1: etcd and kube-apiserver v1.35, for the tests of what
an operator's ``helm install`` meets (admission, CRD structural schemas and CEL rules, defaulting, RBAC,
server-side apply) and of the RayJob launcher.

Both binaries are built once from their Go modules (:mod:`worldloom.testkit.k8s_tools`, cached in
.cache/tools). The API server gets a CA and serving certificate made with ``openssl``, a static token
file with two users -- ``admin`` (group system:masters) and ``developer`` (no group: RBAC grants it
nothing) -- ``--authorization-mode=Node,RBAC``, a service-account key pair (so TokenRequest issues
real service-account tokens) and ``--endpoint-reconciler-type=none`` (no Endpoints for 127.0.0.1).

There is no scheduler, kubelet or controller-manager: objects are admitted and stored, but no pod
ever runs, no ReplicaSet is made, namespaces are not finalized and nothing is garbage-collected.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from worldloom.testkit.ports import LOOPBACK, free_port, port_open
from worldloom.testkit.process import ManagedProcess

SERVICE_CIDR = "10.96.0.0/16"  # Service ClusterIPs are allocated from it; nothing listens there


class EtcdServer(ManagedProcess):
    """A single-member etcd on loopback; ``endpoint`` is its client URL."""

    name = "etcd"

    def __init__(self, binary: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binary = str(binary)
        self.client_port = self.peer_port = 0

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.client_port}"

    def prepare(self) -> None:
        self.client_port, self.peer_port = free_port(), free_port()

    def command(self) -> list[str]:
        assert self.workdir is not None
        peer = f"http://{LOOPBACK}:{self.peer_port}"
        return [self.binary, "--name", "wl", "--data-dir", str(self.workdir / "data"),
                "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"wl={peer}",
                "--log-level", "warn", "--unsafe-no-fsync"]  # test data: no fsync, much faster on a busy disk

    def is_ready(self) -> bool:
        if not port_open(self.client_port):
            return False
        with urllib.request.urlopen(f"{self.endpoint}/health", timeout=2) as answer:
            return json.load(answer).get("health") == "true"


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr[-2000:]}")


class KubeAPIServer(ManagedProcess):
    """kube-apiserver over ``etcd``; ``url`` is https://127.0.0.1:PORT, ``ca_file`` its CA."""

    name = "kube-apiserver"
    stop_timeout = 15.0

    def __init__(self, binary: str | os.PathLike[str], etcd: str, **kwargs: Any) -> None:
        kwargs.setdefault("ready_timeout", 90.0)
        super().__init__(**kwargs)
        self.binary, self.etcd = str(binary), etcd
        self.port = 0
        self.tokens = {"admin": secrets.token_hex(16), "developer": secrets.token_hex(16)}

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def ca_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "pki" / "ca.crt"

    def prepare(self) -> None:
        assert self.workdir is not None
        self.port = free_port()
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-days", "2", "-subj", "/CN=worldloom-test-ca", cwd=pki)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                 "-subj", "/CN=kube-apiserver", cwd=pki)
        (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
                                     "extendedKeyUsage=serverAuth\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=pki)
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        (pki / "tokens.csv").write_text(f'{self.tokens["admin"]},admin,uid-admin,"system:masters"\n'
                                        f'{self.tokens["developer"]},developer,uid-developer\n')
        for path in pki.iterdir():
            path.chmod(0o600)

    def command(self) -> list[str]:
        assert self.workdir is not None
        pki = self.workdir / "pki"
        return [
            self.binary, f"--etcd-servers={self.etcd}",
            f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}", f"--secure-port={self.port}",
            f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
            f"--cert-dir={self.workdir / 'certs'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC", "--anonymous-auth=false",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--endpoint-reconciler-type=none",
            "--profiling=false", "--enable-priority-and-fairness=false", "--v=1",
        ]

    def request(self, path: str, *, user: str = "admin", timeout: float = 5) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.tokens[user]}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def is_ready(self) -> bool:
        return port_open(self.port) and self.request("/readyz")[0] == 200


class ControlPlane:
    """etcd + kube-apiserver, started together; writes ``kubeconfig`` (contexts ``admin`` and
    ``developer``) and runs kubectl and helm against it.

    ``with ControlPlane() as cp: cp.kubectl("get", "ns")``. The binaries are built on first use."""

    def __init__(self, *, workdir: str | os.PathLike[str] | None = None) -> None:
        from worldloom.testkit import k8s_tools

        self._workdir = Path(workdir) if workdir is not None else None
        self.etcd = EtcdServer(k8s_tools.ensure_etcd(), workdir=self._sub("etcd"))
        self.apiserver: KubeAPIServer | None = None
        self.kubectl_bin, self.helm_bin = k8s_tools.ensure_kubectl(), k8s_tools.ensure_helm()
        self._apiserver_bin = k8s_tools.ensure_kube_apiserver()
        self.startup_seconds: float | None = None

    def _sub(self, name: str) -> Path | None:
        return self._workdir / name if self._workdir is not None else None

    def start(self) -> Self:
        started = time.monotonic()
        try:
            self.etcd.start()
            self.apiserver = KubeAPIServer(self._apiserver_bin, self.etcd.endpoint, workdir=self._sub("apiserver"))
            self.apiserver.start()
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.apiserver is not None:
            self.apiserver.stop()
        self.etcd.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------- clients

    @property
    def kubeconfig(self) -> Path:
        assert self.apiserver is not None and self.apiserver.workdir is not None, "not started"
        return self.apiserver.workdir / "kubeconfig"

    def write_kubeconfig(self, path: Path, token: str, *, namespace: str = "default") -> Path:
        """A kubeconfig for one bearer token (a user's, or a service account's from TokenRequest)."""
        assert self.apiserver is not None
        path.write_text(json.dumps(self._config({"token-user": token}, "token-user", namespace)))
        path.chmod(0o600)
        return path

    def _config(self, users: dict[str, str], current: str, namespace: str = "default") -> dict[str, Any]:
        assert self.apiserver is not None
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": current,
            "clusters": [{"name": "wl", "cluster": {"server": self.apiserver.url,
                                                    "certificate-authority": str(self.apiserver.ca_file)}}],
            "users": [{"name": name, "user": {"token": token}} for name, token in users.items()],
            "contexts": [{"name": name, "context": {"cluster": "wl", "user": name, "namespace": namespace}}
                         for name in users],
        }

    def _write_kubeconfig(self) -> None:
        assert self.apiserver is not None
        self.kubeconfig.write_text(json.dumps(self._config(self.apiserver.tokens, "admin")))
        self.kubeconfig.chmod(0o600)

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm: this kubeconfig, and helm's caches in the workdir."""
        assert self.apiserver is not None and self.apiserver.workdir is not None
        home = self.apiserver.workdir / "home"
        home.mkdir(exist_ok=True)
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(home),
                "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                "HELM_DATA_HOME": str(home / "data")}

    def _tool(self, binary: Path, args: tuple[str, ...], *, input: str | None, check: bool,
              timeout: float) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(binary), *args], input=input, capture_output=True, text=True,
                                env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{binary.name} {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self._tool(self.kubectl_bin, args, input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self._tool(self.helm_bin, args, input=None, check=check, timeout=timeout)

    def token(self, service_account: str, namespace: str, *, seconds: int = 3600) -> str:
        """A real service-account token (TokenRequest, signed by the API server's key)."""
        return self.kubectl("create", "token", service_account, "-n", namespace,
                            f"--duration={seconds}s").stdout.strip()

    def install_crds(self, files: list[Path]) -> None:
        """Server-side apply (the KServe CRD is too big for client-side apply's annotation), then wait
        until every CRD is Established."""
        args = [a for f in files for a in ("-f", str(f))]
        self.kubectl("apply", "--server-side", "--field-manager=worldloom-tests", *args, timeout=300)
        self.kubectl("wait", "--for=condition=Established", "--timeout=120s", *args, timeout=180)


def main() -> None:
    """``python -m worldloom.testkit.kube``: build the binaries, start a control plane, print the
    KUBECONFIG to use, and stop it on Ctrl-C."""
    import signal

    with ControlPlane() as cp:
        print(f"kube-apiserver {cp.apiserver.url if cp.apiserver else ''} ready in {cp.startup_seconds:.1f} s")
        print(f"export KUBECONFIG={cp.kubeconfig}   # contexts: admin, developer")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
