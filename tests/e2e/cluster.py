"""The e2e control plane: etcd, kube-apiserver, shell-operator running the signgate hooks in a
sandbox shaped like the image, the verifier service, and the forwarder that plays kube-proxy.

Everything listens on 127.0.0.1. Every start failure raises :class:`HarnessError` naming the
cause (a port in use, a missing build, a component that never became ready with its log tail, a
webhook configuration that was never registered), so no test can pass on a component that
silently failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
HOOKS = REPO / "hooks"
REQUIREMENTS = REPO / "requirements.txt"
FORWARDER = Path(__file__).resolve().parent / "forwarder.py"

# The image's user (image/Dockerfile SIGNGATE_UID; the chart's runAsUser).
SANDBOX_UID = 65532
LOCK_PATH = Path("/tmp/signgate-e2e.lock")
# What the chart names things for a release called "signgate" in namespace "signgate".
RELEASE_NAMESPACE = "signgate"
SERVICE_NAME = "signgate"
CONFIGURATION_NAME = "signgate"
WEBHOOK_OBJECT = f"{CONFIGURATION_NAME}-hooks"
# Proxy variables must not reach kube-apiserver (its webhook client honours them) nor the hook.
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}


class HarnessError(RuntimeError):
    """The e2e environment could not be set up; the message names the cause."""


# -- processes --------------------------------------------------------------------------------------


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    env.update(extra)
    return env


def _die_with_parent() -> None:
    # An interrupted pytest must not leave a control plane behind: SIGKILL when pytest dies.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_free(port: int, what: str) -> None:
    if port_in_use(port):
        raise HarnessError(f"{what}: port 127.0.0.1:{port} is already in use by another process")


def wait_ports_free(ports: list[int], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(port_in_use(port) for port in ports):
        if time.monotonic() > deadline:
            busy = [port for port in ports if port_in_use(port)]
            raise HarnessError(f"{what} was stopped, but ports {busy} are still in use after {timeout:.0f} s")
        time.sleep(0.05)


class Process:
    """One child process with its log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: dict[str, str],
                 cwd: Path | None = None) -> None:
        self.name, self.argv, self.log_path, self.env, self.cwd = name, argv, log_path, env, cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> "Process":
        if not Path(self.argv[0]).exists() and shutil.which(self.argv[0]) is None:
            raise HarnessError(f"{self.name}: {self.argv[0]} is missing")
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          env=self.env, cwd=self.cwd, preexec_fn=_die_with_parent)
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def fail(self, why: str) -> HarnessError:
        return HarnessError(f"{self.name} {why}\n--- last lines of {self.log_path} ---\n{self.log_tail()}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.running:
                code = self.popen.returncode if self.popen else None
                raise self.fail(f"exited with status {code} before it was ready ({what})")
            try:
                if ready():
                    return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline; reported below
                last = exc
            time.sleep(0.1)
        raise self.fail(f"was not ready within {timeout:.0f} s ({what}; last error: {last!r})")

    def stop(self, timeout: float = 10.0) -> None:
        process = self.popen
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


# -- one control plane per machine ------------------------------------------------------------------


class MachineLock:
    """An flock on LOCK_PATH: only one e2e control plane runs on a machine at a time."""

    def __init__(self, timeout: float = 600.0) -> None:
        self.timeout = timeout
        self._handle = None

    def acquire(self) -> None:
        handle = open(LOCK_PATH, "a+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    handle.close()
                    raise HarnessError(
                        f"another e2e control plane holds {LOCK_PATH} (pid {holder}) for more than "
                        f"{self.timeout:.0f} s; only one may run on a machine at a time")
                time.sleep(1)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


# -- PKI ----------------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_private(path: Path, key: object) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                       serialization.NoEncryption()))
    path.chmod(0o600)


class CertificateAuthority:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / "ca.crt"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, common_name: str, *, organization: str | None = None,
              hosts: Iterable[str] = (), client: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attributes)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        )
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, key)
        return cert_path, key_path


class Pki:
    """The control plane's CA, API server and admin certificates, and the service-account keys."""

    def __init__(self, directory: Path) -> None:
        self.ca = CertificateAuthority(directory, "signgate e2e cluster CA")
        self.server_cert, self.server_key = self.ca.issue(
            "apiserver", "kube-apiserver", hosts=("127.0.0.1", "localhost", "kubernetes.default.svc"))
        self.admin_cert, self.admin_key = self.ca.issue(
            "admin", "admin", organization="system:masters", client=True)
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"
        _write_private(self.sa_key, sa)
        self.sa_pub.write_bytes(sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


# -- etcd and kube-apiserver --------------------------------------------------------------------------


class Etcd:
    def __init__(self, binary: Path, directory: Path) -> None:
        self.binary, self.directory = binary, directory
        self.client_port, self.peer_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.process: Process | None = None

    def start(self, timeout: float = 30) -> "Etcd":
        require_free(self.client_port, "etcd client")
        require_free(self.peer_port, "etcd peer")
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = Process("etcd", [
            str(self.binary), "--name", "e2e", "--data-dir", str(self.directory / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"e2e={peer}", "--unsafe-no-fsync", "--log-level", "warn",
        ], self.directory / "etcd.log", env=clean_environment()).start()
        self.process.wait_until(self._healthy, timeout, f"GET {self.url}/health")
        return self

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
            return json.load(response).get("health") == "true"

    def stop(self) -> None:
        if self.process:
            self.process.stop()


class ApiServer:
    def __init__(self, binary: Path, directory: Path, pki: Pki, etcd: Etcd) -> None:
        self.binary, self.directory, self.pki, self.etcd = binary, directory, pki, etcd
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.process: Process | None = None

    def start(self, timeout: float = 90) -> "ApiServer":
        require_free(self.port, "kube-apiserver")
        p = self.pki
        self.process = Process("kube-apiserver", [
            str(self.binary),
            f"--etcd-servers={self.etcd.url}",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}", "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={p.server_cert}", f"--tls-private-key-file={p.server_key}",
            f"--client-ca-file={p.ca.cert_path}",
            f"--service-account-issuer={self.url}", f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            # No controller-manager creates default service accounts.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            f"--cert-dir={self.directory / 'certs'}",
        ], self.directory / "kube-apiserver.log", env=clean_environment()).start()
        self.process.wait_until(self._ready, timeout, f"GET {self.url}/readyz")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert_path))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/readyz", timeout=3, context=self.ssl_context()) as response:
            return response.status == 200

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def write_kubeconfig(path: Path, server: str, pki: Pki) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(pki.ca.cert_path)}}],
        "users": [{"name": "admin", "user": {"client-certificate": str(pki.admin_cert),
                                              "client-key": str(pki.admin_key)}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
    }
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    path.chmod(0o644)
    return path


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def run(self, *args: str, input: str | None = None, check: bool = False,  # noqa: A002
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args], input=input,
            capture_output=True, text=True, timeout=timeout, env=clean_environment())
        if check and completed.returncode != 0:
            raise HarnessError(f"kubectl {' '.join(args)} failed ({completed.returncode}): "
                               f"{completed.stdout}{completed.stderr}")
        return completed

    def apply_json(self, obj: dict, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", *extra, input=json.dumps(obj))


# -- the sandbox that stands in for the image -------------------------------------------------------


def cache_root() -> Path:
    """Where the harness keeps what it builds (the hook venv), outside the checkout."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "signgate"


def ensure_venv(cache_root: Path) -> Path:
    """A venv with exactly requirements.txt, as the image's /opt/venv (wheels only), cached outside
    the checkout under the hash of requirements.txt and Debian's Python, built once."""
    python = Path("/usr/bin/python3")
    if not python.exists():
        raise HarnessError("the hook sandbox needs Debian's /usr/bin/python3 (apt-get install python3-venv)")
    version = subprocess.run([str(python), "-c", "import sys; print(sys.version)"], capture_output=True,
                             text=True, check=True).stdout
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + version.encode()).hexdigest()[:16]
    target = cache_root / f"e2e-venv-{key}"
    if (target / ".complete").exists():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    building = Path(str(target) + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    steps = [
        [str(python), "-m", "venv", str(building)],
        [str(building / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
         "--only-binary=:all:", "-q", "-r", str(REQUIREMENTS)],
        [str(building / "bin" / "python"), "-m", "pip", "uninstall", "--yes", "--quiet", "pip"],
        [str(building / "bin" / "python"), "-m", "compileall", "-q", str(building / "lib")],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, env=clean_environment())
        if done.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            raise HarnessError(f"building the hook venv failed: {' '.join(step)}\n{done.stdout}{done.stderr}")
    (building / ".complete").write_text("")
    os.chmod(building, 0o755)
    try:
        building.rename(target)
    except OSError:  # built concurrently by someone else: theirs is as good
        shutil.rmtree(building, ignore_errors=True)
    return target


def image_hooks_copy(directory: Path) -> Path:
    """hooks/ as the Dockerfile installs it: world-readable, not writable, library byte-compiled."""
    target = directory / "hooks"
    shutil.copytree(HOOKS, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(target / "lib")], check=True,
                   capture_output=True)
    for path in [target, *target.rglob("*")]:
        mode = 0o755 if path.is_dir() else 0o644
        path.chmod(mode)
    (target / "verify-images.py").chmod(0o755)
    return target


def stage(source: Path, target: Path) -> Path:
    """A copy (hard links where possible) of a cached file or tree at a path the sandbox user can
    reach: the caches live under root's 0700 home, and bwrap opens bind sources as that user."""
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["cp", "-al" if source.is_dir() else "-l", str(source), str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:  # another filesystem: copy
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    for path in [target.parent, target]:
        path.chmod(path.stat().st_mode | 0o055 if path.is_dir() else path.stat().st_mode)
    return target


def owned_dir(path: Path, mode: int = 0o700) -> Path:
    """A writable directory for the sandbox user (what an emptyDir is in the pod)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, SANDBOX_UID, SANDBOX_UID)
    path.chmod(mode)
    return path


def bwrap_available() -> str | None:
    return shutil.which("bwrap")


def sandbox_argv(binds: list[tuple[str, str, bool]], command: list[str], *, workdir: str = "/") -> list[str]:
    """bubblewrap as uid/gid 65532 in its own user and PID namespaces, on a read-only root built
    from the host's /usr plus `binds` (source, target, writable): the image's root filesystem is
    read-only (readOnlyRootFilesystem) and only its volumes are writable. The network namespace
    is the host's, so everything stays on 127.0.0.1."""
    bwrap = bwrap_available()
    if bwrap is None:
        raise HarnessError("bubblewrap is not installed (apt-get install bubblewrap): it runs shell-operator "
                           "and the hook as the image does (uid 65532, read-only root)")
    argv = ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
            bwrap, "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--unshare-pid",
            "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--proc", "/proc", "--dev", "/dev", "--dir", "/etc"]
    for name in ("hosts", "nsswitch.conf", "resolv.conf", "ssl", "ca-certificates", "ld.so.cache",
                 "localtime", "alternatives"):
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for source, target, writable in binds:
        argv += ["--bind" if writable else "--ro-bind", source, target]
    argv += ["--remount-ro", "/", "--chdir", workdir, "--", *command]
    return argv


def sandbox_etc(directory: Path) -> list[tuple[str, str, bool]]:
    """/etc/passwd and /etc/group naming the image's user (Dockerfile: adduser signgate)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "passwd").write_text(
        f"root:x:0:0:root:/root:/sbin/nologin\nsigngate:x:{SANDBOX_UID}:{SANDBOX_UID}::/nonexistent:/sbin/nologin\n")
    (directory / "group").write_text(f"root:x:0:\nsigngate:x:{SANDBOX_UID}:\n")
    return [(str(directory / "passwd"), "/etc/passwd", False), (str(directory / "group"), "/etc/group", False)]


# -- signgate as the chart deploys it -----------------------------------------------------------------

# The chart's mount points (_helpers.tpl "signgate.paths").
CONFIG_DIR = "/etc/signgate/config"
CONFIG_FILE = f"{CONFIG_DIR}/config.json"
KEYS_DIR = "/etc/signgate/keys"
REGISTRY_AUTH_DIR = "/etc/signgate/registry-auth"
REGISTRY_AUTH_FILE = f"{REGISTRY_AUTH_DIR}/.dockerconfigjson"
REGISTRY_CA_DIR = "/etc/signgate/registry-ca"
REGISTRY_CA_FILE = f"{REGISTRY_CA_DIR}/ca.crt"
CERTS_DIR = "/validating-certs"
CACHE_DIR = "/var/cache/signgate"
SOCKET_DIR = "/run/signgate"
SOCKET = f"{SOCKET_DIR}/verifier.sock"
# Not in the chart: the pod reaches the API server with its service account; here, a kubeconfig.
KUBECONFIG_DIR = "/etc/signgate-e2e"

# image/Dockerfile's ENV (and the shell-operator base image's).
IMAGE_ENV = {
    "PATH": "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "VIRTUAL_ENV": "/opt/venv",
    "PYTHONDONTWRITEBYTECODE": "1",
    "SHELL_OPERATOR_HOOKS_DIR": "/hooks",
    "LOG_TYPE": "json",
    "HOME": "/nonexistent",
}


def shared_env() -> dict[str, str]:
    """The chart's signgate.sharedEnv, for both containers."""
    return {"SIGNGATE_NAMESPACE": RELEASE_NAMESPACE, "SIGNGATE_CONFIG": CONFIG_FILE,
            "SIGNGATE_CACHE_DIR": CACHE_DIR}


def operator_env(webhook_port: int, metrics_port: int) -> dict[str, str]:
    """The shell-operator container's environment: the image's, then the chart's."""
    return {
        **IMAGE_ENV,
        # deployment.yaml, container shell-operator
        "SHELL_OPERATOR_NAMESPACE": RELEASE_NAMESPACE,
        "VALIDATING_WEBHOOK_SERVICE_NAME": SERVICE_NAME,
        "VALIDATING_WEBHOOK_CONFIGURATION_NAME": CONFIGURATION_NAME,
        "LOG_TYPE": "json",
        "LOG_LEVEL": "info",
        "SIGNGATE_VERIFIER_SOCKET": SOCKET,
        **shared_env(),
        # This machine, not the chart: no service-account token, and no pod network of its own,
        # so every listener is pinned to loopback and given a free port.
        **host_env(webhook_port, metrics_port),
    }


def host_env(webhook_port: int, metrics_port: int) -> dict[str, str]:  # noqa: N802
    return {
        "KUBE_CONFIG": f"{KUBECONFIG_DIR}/kubeconfig",
        "VALIDATING_WEBHOOK_LISTEN_ADDRESS": "127.0.0.1",
        "VALIDATING_WEBHOOK_LISTEN_PORT": str(webhook_port),
        "SHELL_OPERATOR_LISTEN_ADDRESS": "127.0.0.1",
        "SHELL_OPERATOR_LISTEN_PORT": str(metrics_port),
    }


def verifier_env() -> dict[str, str]:
    """The verifier container's environment: the image's, then the chart's."""
    return {**IMAGE_ENV, "PYTHONPATH": "/hooks/lib", **shared_env()}


# Where the chart mounts volumes in each container (checked against the rendered chart).
SHARED_MOUNT_PATHS = (CONFIG_DIR, KEYS_DIR, REGISTRY_AUTH_DIR, REGISTRY_CA_DIR, CACHE_DIR, SOCKET_DIR)
OPERATOR_MOUNT_PATHS = (CERTS_DIR, "/tmp", "/var/run/shell-operator", *SHARED_MOUNT_PATHS)
VERIFIER_COMMAND = ["/opt/venv/bin/python", "-m", "signgate", "serve", "--socket", SOCKET, "--max-workers", "32"]


class SigngatePod:
    """What one pod of the chart's Deployment runs: shell-operator with the hooks (container
    `shell-operator`) and `signgate serve` (container `verifier`), each in its own sandbox, sharing
    the chart's volumes; plus the forwarder from 127.0.0.1:443 that plays the Service."""

    def __init__(self, directory: Path, *, shell_operator: Path, venv: Path, kubectl: Kubectl,
                 apiserver: ApiServer, config: dict, keys: dict[str, Path],
                 registry_auth: Path | None = None, registry_ca: Path | None = None,
                 token: str | None = None) -> None:
        """`token`: shell-operator authenticates with this ServiceAccount token instead of the
        admin certificate, so that the RBAC bound to that account is what it runs with."""
        self.directory = directory
        self.token = token
        self.shell_operator_binary = stage(shell_operator, directory / "image" / "shell-operator")
        self.venv = stage(venv, directory / "image" / "venv")
        self.kubectl = kubectl
        self.apiserver = apiserver
        self.webhook_port = free_port()
        self.metrics_port = free_port()
        self.hooks = image_hooks_copy(directory / "image")
        self.etc = sandbox_etc(directory / "etc")
        # ConfigMap / Secret volumes: read-only, readable by the pod's user.
        volumes = directory / "volumes"
        self.config_dir = volumes / "config"
        self.config_dir.mkdir(parents=True)
        self.config_path = self.config_dir / "config.json"
        self.write_config(config)
        self.keys_dir = volumes / "keys"
        self.keys_dir.mkdir()
        for name, path in keys.items():
            shutil.copy(path, self.keys_dir / f"{name}.pub")
        self.auth_dir = self.ca_dir = None
        if registry_auth is not None:
            self.auth_dir = volumes / "registry-auth"
            self.auth_dir.mkdir()
            shutil.copy(registry_auth, self.auth_dir / ".dockerconfigjson")
        if registry_ca is not None:
            self.ca_dir = volumes / "registry-ca"
            self.ca_dir.mkdir()
            shutil.copy(registry_ca, self.ca_dir / "ca.crt")
        self.certs_dir = volumes / "validating-certs"
        self._webhook_certificates()
        self.kubeconfig_dir = volumes / "kubeconfig"
        self._sandbox_kubeconfig()
        for path in volumes.rglob("*"):
            os.chown(path, SANDBOX_UID, SANDBOX_UID)  # fsGroup: the pod's user reads its Secrets
        # emptyDirs.
        self.tmp = owned_dir(directory / "emptydir" / "tmp", 0o1777)
        self.run_dir = owned_dir(directory / "emptydir" / "shell-operator-run")
        self.cache = owned_dir(directory / "emptydir" / "cache")
        self.socket_dir = owned_dir(directory / "emptydir" / "verifier-socket")
        self.extra_operator_env: dict[str, str] = {}
        self.operator: Process | None = None
        self.verifier: Process | None = None
        self.forwarder: Process | None = None

    # -- volumes ----------------------------------------------------------------------------------

    def write_config(self, config: dict) -> None:
        """The ConfigMap's config.json, rendered as JSON like the chart does."""
        self.config = config
        self.config_path.write_text(json.dumps(config, indent=2))
        self.config_path.chmod(0o444)

    def _webhook_certificates(self) -> None:
        """tls.source=helm: a CA and a certificate for the Service's DNS names."""
        ca = CertificateAuthority(self.certs_dir, "signgate-webhook-ca")
        svc = f"{SERVICE_NAME}.{RELEASE_NAMESPACE}"
        cert, key = ca.issue("tls", f"{svc}.svc",
                             hosts=(SERVICE_NAME, svc, f"{svc}.svc", f"{svc}.svc.cluster.local"))
        cert.rename(self.certs_dir / "tls.crt")
        key.rename(self.certs_dir / "tls.key")
        self.webhook_ca = self.certs_dir / "ca.crt"
        (self.certs_dir / "ca.crt").chmod(0o440)
        (self.certs_dir / "tls.key").chmod(0o440)

    def _sandbox_kubeconfig(self) -> None:
        import base64

        pki = self.apiserver.pki

        def data(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        self.kubeconfig_dir.mkdir()
        (self.kubeconfig_dir / "kubeconfig").write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": self.apiserver.url,
                                                     "certificate-authority-data": data(pki.ca.cert_path)}}],
            "users": [{"name": "admin", "user": {"token": self.token} if self.token else {
                "client-certificate-data": data(pki.admin_cert), "client-key-data": data(pki.admin_key)}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        }))
        (self.kubeconfig_dir / "kubeconfig").chmod(0o400)

    def _shared_mounts(self) -> list[tuple[str, str, bool]]:
        mounts = [(str(self.config_dir), CONFIG_DIR, False), (str(self.keys_dir), KEYS_DIR, False)]
        if self.auth_dir is not None:
            mounts.append((str(self.auth_dir), REGISTRY_AUTH_DIR, False))
        if self.ca_dir is not None:
            mounts.append((str(self.ca_dir), REGISTRY_CA_DIR, False))
        mounts += [(str(self.cache), CACHE_DIR, True), (str(self.socket_dir), SOCKET_DIR, True)]
        return mounts

    def _image_mounts(self) -> list[tuple[str, str, bool]]:
        return [*self.etc, (str(self.venv), "/opt/venv", False), (str(self.hooks), "/hooks", False),
                (str(self.shell_operator_binary), "/shell-operator", False)]

    # -- containers -------------------------------------------------------------------------------

    def operator_env(self) -> dict[str, str]:
        return {**operator_env(self.webhook_port, self.metrics_port), **self.extra_operator_env}

    def verifier_env(self) -> dict[str, str]:
        return verifier_env()

    def _operator_argv(self) -> list[str]:
        mounts = [*self._image_mounts(), (str(self.certs_dir), CERTS_DIR, False),
                  (str(self.tmp), "/tmp", True), (str(self.run_dir), "/var/run/shell-operator", True),
                  (str(self.kubeconfig_dir), KUBECONFIG_DIR, False), *self._shared_mounts()]
        return sandbox_argv(mounts, ["/shell-operator", "start"], workdir="/hooks")

    def _verifier_argv(self, command: list[str]) -> list[str]:
        return sandbox_argv([*self._image_mounts(), *self._shared_mounts()], command, workdir="/hooks")

    def start_verifier(self, timeout: float = 60) -> None:
        self.verifier = Process("signgate serve (verifier container)", self._verifier_argv(VERIFIER_COMMAND),
            self.directory / "verifier.log", env=self.verifier_env()).start()
        self.verifier.wait_until(self._verifier_answers, timeout, "`signgate ping`, the chart's liveness probe")

    def _verifier_answers(self) -> bool:
        probe = subprocess.run(self._verifier_argv(
            ["/opt/venv/bin/python", "-m", "signgate", "ping", "--socket", SOCKET]),
            env=self.verifier_env(), capture_output=True, text=True, timeout=30)
        return probe.returncode == 0

    def start_forwarder(self, timeout: float = 10) -> None:
        require_free(443, "the forwarder that plays the Service (443 -> shell-operator's webhook port)")
        self.forwarder = Process("forwarder 127.0.0.1:443", [
            sys.executable, str(FORWARDER), "443", str(self.webhook_port)],
            self.directory / "forwarder.log", env=clean_environment()).start()
        self.forwarder.wait_until(lambda: "listening" in self.forwarder.log(), timeout, "listening on 443")

    def create_service(self) -> None:
        """The chart's Service, as an ExternalName to localhost: the API server's resolver turns it
        into https://localhost:443, where the forwarder listens."""
        self.kubectl.run("create", "namespace", RELEASE_NAMESPACE)
        self.kubectl.apply_json({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE_NAME, "namespace": RELEASE_NAMESPACE},
            "spec": {"type": "ExternalName", "externalName": "localhost",
                     "ports": [{"name": "https", "port": 443, "targetPort": 443, "protocol": "TCP"}]},
        })
        check = self.kubectl.run("get", "service", "-n", RELEASE_NAMESPACE, SERVICE_NAME)
        if check.returncode != 0:
            raise HarnessError(f"could not create the webhook Service: {check.stderr}")

    def start_operator(self, timeout: float = 90) -> None:
        require_free(self.webhook_port, "shell-operator's webhook server")
        require_free(self.metrics_port, "shell-operator's metrics server")
        # A registration from an earlier start would make readiness pass on stale data.
        self.kubectl.run("delete", "validatingwebhookconfiguration", WEBHOOK_OBJECT, "--ignore-not-found")
        self.kubectl.run("delete", "mutatingwebhookconfiguration", WEBHOOK_OBJECT, "--ignore-not-found")
        self.operator = Process("shell-operator", self._operator_argv(), self.directory / "shell-operator.log",
                                env=self.operator_env()).start()
        self.operator.wait_until(self._webhook_serves, timeout,
                                 f"GET https://127.0.0.1:{self.webhook_port}/healthz")
        deadline = time.monotonic() + 30
        while not self._registered():
            if not self.operator.running:
                raise self.operator.fail("exited before registering its webhook configuration")
            if time.monotonic() > deadline:
                raise self.operator.fail(
                    f"serves, but never registered the webhook configuration {WEBHOOK_OBJECT}")
            time.sleep(0.2)

    def _webhook_serves(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.webhook_ca))
        context.check_hostname = False  # the certificate names the Service, not 127.0.0.1
        with urllib.request.urlopen(f"https://127.0.0.1:{self.webhook_port}/healthz", timeout=2,
                                    context=context) as response:
            return response.status == 200

    def _registered(self) -> bool:
        kinds = ["validatingwebhookconfiguration"]
        if any(rule.get("pinDigest") for rule in self.config.get("policy", [])):
            kinds.append("mutatingwebhookconfiguration")
        return all(self.kubectl.run("get", kind, WEBHOOK_OBJECT).returncode == 0 for kind in kinds)

    def webhook_configuration(self, kind: str = "validatingwebhookconfiguration") -> dict:
        done = self.kubectl.run("get", kind, WEBHOOK_OBJECT, "-o", "json", check=True)
        return json.loads(done.stdout)

    def start(self) -> "SigngatePod":
        self.start_verifier()
        self.start_operator()
        return self

    def stop_operator(self) -> None:
        """Stop the shell-operator container. Killing bwrap takes its PID namespace down
        (--die-with-parent), the kernel reaps the rest asynchronously: wait for the ports."""
        if self.operator:
            self.operator.stop()
            wait_ports_free([self.webhook_port, self.metrics_port], "shell-operator")

    def stop(self) -> None:
        for process in (self.operator, self.verifier, self.forwarder):
            if process is not None:
                process.stop()

    def operator_log_entries(self) -> list[dict]:
        entries = []
        for line in (self.operator.log() if self.operator else "").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def metrics(self, path: str = "/metrics") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as response:
            return response.read().decode()


class StallingServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a registry that
    hangs. Connections are held until stop()."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        self.accepted = 0
        self._stopping = False
        import threading

        self.thread = threading.Thread(target=self._serve, daemon=True, name="stalling-registry")
        self.thread.start()

    def _serve(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.held:
            conn.close()
        self.thread.join(timeout=5)
