"""Start a real etcd and kube-apiserver on loopback for the tests and the local demo.

This follows controller-runtime's envtest: no kubelet, scheduler or
kube-controller-manager runs, so there is no garbage collection of
ownerReferences, deleted namespaces stay Terminating and no ``default``
ServiceAccount is created in new namespaces. The binaries come from
``tools/control-plane.sh`` or from a folder named by ``KUBEBUILDER_ASSETS``.
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

logger = logging.getLogger(__name__)

BINARIES = ("kube-apiserver", "kubectl", "etcd")
ADMIN_USER = "replytracker-admin"
LOG_TAIL_LINES = 30

_POLL_INTERVAL = 0.25  # seconds between readiness probes
_STOP_TIMEOUT = 10.0  # seconds to wait after SIGTERM before SIGKILL
_PROBE_TIMEOUT = 5.0  # seconds for one HTTP readiness request


class ControlPlaneError(RuntimeError):
    """Failure to find, start or use the local etcd and kube-apiserver."""


class KubectlError(ControlPlaneError):
    """A kubectl command exited with a non-zero status.

    ``result`` is the completed process, with ``stdout`` and ``stderr`` as text.
    """

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        command = " ".join(str(arg) for arg in result.args)
        super().__init__(
            f"kubectl failed with exit status {result.returncode}: {command}\n"
            f"{result.stderr.strip()}"
        )
        self.result = result


def run_kubectl(
    kubectl: Path,
    *args: str,
    kubeconfig: Path,
    cache_dir: Path,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``kubectl`` with ``kubeconfig`` and return the result.

    The discovery cache goes to ``cache_dir``, out of the user's ~/.kube.
    Raises ``KubectlError`` on a non-zero exit status when ``check`` is true.
    """
    command = [str(kubectl), f"--kubeconfig={kubeconfig}", f"--cache-dir={cache_dir}", *args]
    result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise KubectlError(result)
    return result


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    NOTE: another process can take the port between this call and the server's
    bind. ``ControlPlane.start`` then fails with the server's log in the error.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _has_binaries(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in BINARIES)


def _repository_root() -> Path:
    # This file is <repo>/operator/replytracker/controlplane.py.
    return Path(__file__).resolve().parents[2]


def find_assets(*, timeout: float = 3600) -> Path:
    """Find or build kube-apiserver, kubectl and etcd and return their folder.

    A ``KUBEBUILDER_ASSETS`` folder that contains all three binaries is used as
    it is. Otherwise this runs ``tools/control-plane.sh``, which builds the
    binaries on its first run (minutes) and prints a cached folder after that.
    ``timeout`` is in seconds and bounds the build.
    """
    env_folder = os.environ.get("KUBEBUILDER_ASSETS")
    if env_folder and _has_binaries(Path(env_folder)):
        return Path(env_folder)

    script = _repository_root() / "tools" / "control-plane.sh"
    if not script.is_file():
        raise ControlPlaneError(
            f"build script not found at {script}. Set KUBEBUILDER_ASSETS to a "
            f"folder that contains {', '.join(BINARIES)}."
        )

    logger.info("Running %s to find or build the control plane binaries", script)
    try:
        result = subprocess.run(
            ["bash", str(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ControlPlaneError(
            f"{script} timed out after {timeout:.0f} s; run it by hand to see "
            "the build output"
        ) from error

    if result.returncode != 0:
        raise ControlPlaneError(
            f"{script} failed with exit status {result.returncode}:\n"
            f"{_last_lines(result.stderr)}"
        )

    output_lines = result.stdout.strip().splitlines()
    folder = Path(output_lines[-1]) if output_lines else None
    if folder is None or not _has_binaries(folder):
        raise ControlPlaneError(
            f"{script} printed {result.stdout.strip()!r}, which is not a folder "
            f"that contains {', '.join(BINARIES)}"
        )
    return folder


def _last_lines(text: str, count: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def _read_log_tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return _last_lines(text) or "(log is empty)"


class _ServerProcess:
    """One child process whose stdout and stderr go to a log file."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log_file: IO[bytes] = log_path.open("wb")
        try:
            self.popen = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
            )
        except OSError:
            self._log_file.close()
            raise
        logger.info("Started %s (pid %d), log in %s", name, self.popen.pid, log_path)

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def failure(self, reason: str) -> ControlPlaneError:
        return ControlPlaneError(
            f"{self.name} {reason}; last lines of {self.log_path}:\n"
            f"{_read_log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s (pid %d) did not exit %.0f s after SIGTERM; sending SIGKILL",
                    self.name,
                    self.popen.pid,
                    _STOP_TIMEOUT,
                )
                self.popen.kill()
                self.popen.wait(timeout=_STOP_TIMEOUT)
        self._log_file.close()
        logger.info("Stopped %s (pid %d)", self.name, self.popen.pid)


def _write_private_key(path: Path) -> None:
    """Write a new 2048-bit RSA private key in PEM form to ``path``."""
    if shutil.which("openssl"):
        result = subprocess.run(
            [
                "openssl", "genpkey", "-algorithm", "RSA",
                "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise ControlPlaneError(
                f"openssl genpkey failed with exit status {result.returncode} "
                f"while writing {path}:\n{_last_lines(result.stderr)}"
            )
        return

    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError as error:
        raise ControlPlaneError(
            "neither the openssl command nor the Python cryptography package is "
            "available to create the service account signing key; install one of them"
        ) from error

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
    )


def _write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    user: str,
    token: str,
    namespace: str | None = None,
) -> None:
    """Write a kubeconfig with one cluster, one token user and one context.

    The file is created with mode 0600 because it contains a bearer token.
    """
    context: dict[str, Any] = {"cluster": "replytracker-local", "user": user}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "replytracker-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode("ascii"),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "replytracker-local", "context": context}],
        "current-context": "replytracker-local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    file_descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(file_descriptor, "w", encoding="utf-8") as file:
        yaml.safe_dump(config, file, sort_keys=False)


class ControlPlane:
    """A real etcd and kube-apiserver on free 127.0.0.1 ports.

    ``workdir`` receives the logs (``etcd.log``, ``kube-apiserver.log``) and the
    admin kubeconfig, and is kept after ``stop``. The etcd data, the serving
    certificate and the key and token files go to a temporary folder that
    ``stop`` removes. Use it as a context manager, or call ``start`` and
    ``stop``. ``extra_apiserver_args`` are appended to the kube-apiserver flags.
    """

    def __init__(
        self,
        *,
        assets: Path,
        workdir: Path,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self._assets = Path(assets)
        self._workdir = Path(workdir)
        self._extra_apiserver_args = list(extra_apiserver_args)
        self._temp_dir: Path | None = None
        self._etcd: _ServerProcess | None = None
        self._apiserver: _ServerProcess | None = None
        self._url: str | None = None
        self._kubeconfig: Path | None = None
        self._ca_pem: bytes | None = None

    @property
    def assets(self) -> Path:
        """Folder that contains the kube-apiserver, kubectl and etcd binaries."""
        return self._assets

    @property
    def url(self) -> str:
        """HTTPS URL of the running kube-apiserver."""
        if self._url is None:
            raise ControlPlaneError("the control plane is not running; call start() first")
        return self._url

    @property
    def kubeconfig(self) -> Path:
        """Path of the admin kubeconfig (token user in group system:masters)."""
        if self._kubeconfig is None:
            raise ControlPlaneError("the control plane is not running; call start() first")
        return self._kubeconfig

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 120) -> None:
        """Start etcd and kube-apiserver and wait until the API server is ready.

        Ready means ``/readyz`` returns ok and the ``default`` namespace exists.
        ``timeout`` is in seconds for the whole start. On failure everything
        started so far is stopped, and the error contains the last lines of
        the failing server's log.
        """
        if self._temp_dir is not None:
            raise ControlPlaneError("the control plane is already started")
        if not _has_binaries(self._assets):
            raise ControlPlaneError(
                f"{self._assets} does not contain all of {', '.join(BINARIES)}"
            )

        started_at = time.monotonic()
        deadline = started_at + timeout
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._temp_dir = Path(tempfile.mkdtemp(prefix="replytracker-controlplane-"))
        atexit.register(self.stop)
        try:
            etcd_url = self._start_etcd(deadline)
            self._start_apiserver(etcd_url, deadline)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "Control plane ready at %s after %.1f s", self._url, time.monotonic() - started_at
        )

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd, and remove the temporary folder.

        Sends SIGTERM, then SIGKILL after a grace period. Logs and the admin
        kubeconfig in ``workdir`` stay. Calling it again does nothing.
        """
        for process in (self._apiserver, self._etcd):
            if process is not None:
                process.stop()
        self._apiserver = None
        self._etcd = None
        self._url = None
        self._kubeconfig = None
        self._ca_pem = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        atexit.unregister(self.stop)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl with the admin kubeconfig and return the result.

        Raises ``KubectlError`` on a non-zero exit status when ``check`` is true.
        ``timeout`` is in seconds.
        """
        return self._run_kubectl(
            self.kubeconfig, *args, input=input, check=check, timeout=timeout
        )

    def service_account_kubeconfig(
        self,
        *,
        namespace: str,
        name: str,
        path: Path,
        duration: str = "24h",
    ) -> Path:
        """Write a kubeconfig that authenticates as one ServiceAccount and return ``path``.

        The ServiceAccount must exist. Its token comes from the TokenRequest API
        (``kubectl create token``) and expires after ``duration``, a Go duration
        such as ``"24h"``. The context's namespace is ``namespace``.
        """
        token = self.kubectl(
            "create", "token", name, f"--namespace={namespace}", f"--duration={duration}"
        ).stdout.strip()
        if not token:
            raise ControlPlaneError(
                f"kubectl create token returned no token for ServiceAccount {namespace}/{name}"
            )
        assert self._ca_pem is not None  # set by start() together with the kubeconfig
        _write_kubeconfig(
            Path(path),
            server=self.url,
            ca_pem=self._ca_pem,
            user=f"system:serviceaccount:{namespace}:{name}",
            token=token,
            namespace=namespace,
        )
        return Path(path)

    def _run_kubectl(
        self,
        kubeconfig: Path,
        *args: str,
        input: str | None,
        check: bool,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        assert self._temp_dir is not None
        return run_kubectl(
            self._assets / "kubectl",
            *args,
            kubeconfig=kubeconfig,
            cache_dir=self._temp_dir / "kubectl-cache",
            input=input,
            check=check,
            timeout=timeout,
        )

    def _start_etcd(self, deadline: float) -> str:
        assert self._temp_dir is not None
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        command = [
            str(self._assets / "etcd"),
            "--name=default",
            f"--data-dir={self._temp_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # The data is thrown away after the run, so durability buys nothing.
            "--unsafe-no-fsync",
        ]
        self._etcd = _ServerProcess("etcd", command, self._workdir / "etcd.log")

        health_url = f"{client_url}/health"
        while True:
            if self._etcd.exited():
                raise self._etcd.failure(f"exited with status {self._etcd.popen.returncode}")
            try:
                with urllib.request.urlopen(health_url, timeout=_PROBE_TIMEOUT) as response:
                    if b'"health":"true"' in response.read():
                        return client_url
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise self._etcd.failure(f"timed out waiting for {health_url} to report healthy")
            time.sleep(_POLL_INTERVAL)

    def _start_apiserver(self, etcd_url: str, deadline: float) -> None:
        assert self._temp_dir is not None
        cert_dir = self._temp_dir / "certs"
        cert_dir.mkdir()
        signing_key = self._temp_dir / "service-account.key"
        _write_private_key(signing_key)

        admin_token = secrets.token_urlsafe(32)
        token_file = self._temp_dir / "tokens.csv"
        token_file.write_text(f'{admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        token_file.chmod(0o600)

        port = free_port()
        url = f"https://127.0.0.1:{port}"
        command = [
            str(self._assets / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            # kube-apiserver writes a self-signed CA and serving certificate
            # here as apiserver.crt (leaf followed by CA) and apiserver.key.
            f"--cert-dir={cert_dir}",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            # The ServiceAccount admission plugin rejects pods whose
            # ServiceAccount does not exist, and the "default" ServiceAccount
            # is created by kube-controller-manager, which is not running.
            "--disable-admission-plugins=ServiceAccount",
            "--service-account-issuer=https://kubernetes.default.svc",
            # One RSA key serves both: the verifier reads the public half of a private key.
            f"--service-account-key-file={signing_key}",
            f"--service-account-signing-key-file={signing_key}",
            f"--token-auth-file={token_file}",
            # The default "lease" reconciler rejects the loopback address as
            # an endpoint of the "kubernetes" Service and logs an error every
            # 10 s. No pods run here, so nothing uses that Service.
            "--endpoint-reconciler-type=none",
            *self._extra_apiserver_args,
        ]
        self._apiserver = _ServerProcess(
            "kube-apiserver", command, self._workdir / "kube-apiserver.log"
        )

        ca_pem = self._wait_for_apiserver(url, cert_dir / "apiserver.crt", admin_token, deadline)
        kubeconfig = self._workdir / "admin.kubeconfig"
        _write_kubeconfig(
            kubeconfig, server=url, ca_pem=ca_pem, user=ADMIN_USER, token=admin_token
        )
        self._url = url
        self._ca_pem = ca_pem
        self._kubeconfig = kubeconfig

    def _wait_for_apiserver(
        self, url: str, ca_file: Path, token: str, deadline: float
    ) -> bytes:
        """Poll until /readyz is ok and the default namespace exists, then return the CA PEM."""
        assert self._apiserver is not None
        last_problem = "no response yet"
        while True:
            if self._apiserver.exited():
                raise self._apiserver.failure(
                    f"exited with status {self._apiserver.popen.returncode}"
                )
            if time.monotonic() > deadline:
                raise self._apiserver.failure(
                    f"timed out waiting to be ready at {url} (last probe: {last_problem})"
                )

            ca_pem, problem = self._probe_apiserver(url, ca_file, token)
            if ca_pem is not None:
                return ca_pem
            last_problem = problem
            time.sleep(_POLL_INTERVAL)

    @staticmethod
    def _probe_apiserver(url: str, ca_file: Path, token: str) -> tuple[bytes | None, str]:
        """Probe readiness once and return the CA PEM, or None and the reason it is not ready."""
        if not ca_file.is_file():
            return None, f"serving certificate {ca_file} not written yet"
        ca_pem = ca_file.read_bytes()
        try:
            context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        except (ssl.SSLError, ValueError) as error:
            # kube-apiserver may still be writing the file.
            return None, f"cannot load {ca_file}: {error}"

        headers = {"Authorization": f"Bearer {token}"}
        for path in ("/readyz", "/api/v1/namespaces/default"):
            request = urllib.request.Request(url + path, headers=headers)
            try:
                with urllib.request.urlopen(
                    request, context=context, timeout=_PROBE_TIMEOUT
                ) as response:
                    response.read()
            except urllib.error.HTTPError as error:
                body = error.read().decode("utf-8", errors="replace")
                return None, f"GET {path} returned {error.code}: {_last_lines(body, 5)}"
            except (urllib.error.URLError, OSError) as error:
                return None, f"GET {path} failed: {error}"
            logger.debug("GET %s%s succeeded", url, path)
        return ca_pem, ""
