"""A real notary-server on 127.0.0.1 and the real `notary` client, for Docker Content Trust tests.

Debian's `notary` package (0.7) provides both binaries. The server runs over TLS (certificates from
support.certs) with memory storage and its own local signer for timestamps; the client keeps its
keys in a trust directory and is driven with passphrases from the environment.

The root public key that tests pin is taken from the client's own private root key (decrypted with
openssl), not from anything the server serves, so pinning is checked against the key that signed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from support import certs
from support.registry import _die_with_parent, free_port, stop_process

SERVER_BINARY = "notary-server"
CLIENT_BINARY = "notary"
PASSPHRASE = "signgate-notary-test"
PASSPHRASE_ENV = {
    "NOTARY_ROOT_PASSPHRASE": PASSPHRASE,
    "NOTARY_TARGETS_PASSPHRASE": PASSPHRASE,
    "NOTARY_SNAPSHOT_PASSPHRASE": PASSPHRASE,
    "NOTARY_DELEGATION_PASSPHRASE": PASSPHRASE,
}


class NotaryStartError(RuntimeError):
    pass


def notary_binaries() -> bool:
    return shutil.which(SERVER_BINARY) is not None and shutil.which(CLIENT_BINARY) is not None


@dataclass
class NotaryServer:
    """notary-server on 127.0.0.1:<free port>, TLS with a test CA, memory storage."""

    directory: Path
    ca: certs.CA | None = None
    port: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.ca is None:
            self.ca = certs.make_ca(self.directory, name="signgate notary test CA")
        self.cert_path, self.key_path = certs.make_server_cert(self.ca, self.directory)
        self.config_path = self.directory / "server.json"
        self.log_path = self.directory / "notary-server.log"

    @property
    def ca_path(self) -> Path:
        assert self.ca is not None
        return self.ca.cert_path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0, attempts: int = 5) -> "NotaryServer":
        for _ in range(attempts):
            self.port = free_port()
            self._spawn()
            try:
                self._wait_ready(timeout)
                return self
            except NotaryStartError:
                clash = "address already in use" in self.log_tail()
                self.stop()
                if not clash:
                    raise
        raise NotaryStartError(f"notary-server found no free port in {attempts} attempts")

    def _spawn(self) -> None:
        config = {
            "server": {
                "http_addr": f"127.0.0.1:{self.port}",
                "tls_cert_file": str(self.cert_path),
                "tls_key_file": str(self.key_path),
            },
            "trust_service": {"type": "local", "hostname": "", "port": "", "key_algorithm": "ecdsa"},
            "logging": {"level": "info"},
            "storage": {"backend": "memory"},
        }
        self.config_path.write_text(json.dumps(config))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [SERVER_BINARY, "-config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.directory,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                preexec_fn=_die_with_parent,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        context = ssl.create_default_context(cafile=str(self.ca_path))
        last = "no attempt"
        while time.monotonic() < deadline:
            if not self.running:
                raise NotaryStartError(f"notary-server exited\n{self.log_tail()}")
            connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=1.0, context=context)
            try:
                connection.request("GET", "/_notary_server/health")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    return
                last = f"health answered {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            finally:
                connection.close()
            time.sleep(0.02)
        raise NotaryStartError(f"notary-server not ready after {timeout}s ({last})\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        stop_process(process, timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class NotaryClientError(RuntimeError):
    pass


@dataclass
class NotaryClient:
    """The `notary` CLI with one trust directory (so one root key for every GUN it initialises)."""

    server: NotaryServer
    trust_dir: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [CLIENT_BINARY, "-s", self.server.url, "--tlscacert", str(self.server.ca_path),
                   "-d", str(self.trust_dir), *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.trust_dir), **PASSPHRASE_ENV}
        completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        if check and completed.returncode != 0:
            raise NotaryClientError(f"{' '.join(command)} -> {completed.returncode}\n{completed.stdout}\n{completed.stderr}")
        return completed

    def init(self, gun: str) -> None:
        """Create the trust collection and publish it (root, targets, snapshot; timestamp by the server)."""
        self.run("init", gun, "--publish")

    def addhash(self, gun: str, tag: str, size: int, digest: str, roles: tuple[str, ...] = ()) -> None:
        """Sign `tag` as a target with this manifest digest and size (as `docker trust sign` does)."""
        algorithm, _, hex_digest = digest.partition(":")
        assert algorithm == "sha256", digest
        role_args = [arg for role in roles for arg in ("--roles", role)]
        self.run("addhash", gun, tag, str(size), "--sha256", hex_digest, *role_args, "--publish")

    def add_delegation(self, gun: str, role: str, public_pem: Path, private_pem: Path) -> None:
        """Delegate `role` to a key (all paths) and make its private key available for signing.

        notary imports only unencrypted PKCS#8 delegation keys with --role/--gun given.
        """
        self.run("key", "import", str(private_pem), "--role", role, "--gun", gun)
        self.run("delegation", "add", gun, role, str(public_pem), "--all-paths", "--publish")

    def root_public_pem(self) -> bytes:
        """The public half of this trust directory's root key, from the private key file itself
        (or, without the openssl CLI, from the certificate in the client's local root.json)."""
        if shutil.which("openssl") is None:
            return self._root_public_pem_from_local_metadata()
        for path in sorted((self.trust_dir / "private").glob("*.key")):
            lines = path.read_text().splitlines()
            if "role: root" not in lines:
                continue
            # Notary writes PEM headers ("role: root") that openssl's PKCS#8 reader does not take.
            body = "\n".join(line for line in lines if line and ": " not in line) + "\n"
            private = subprocess.run(
                ["openssl", "pkcs8", "-passin", f"pass:{PASSPHRASE}"],
                input=body, capture_output=True, text=True, check=True, timeout=30,
            ).stdout
            return subprocess.run(
                ["openssl", "pkey", "-pubout"], input=private, capture_output=True, check=True, text=True, timeout=30,
            ).stdout.encode()
        raise NotaryClientError(f"no root key in {self.trust_dir}/private")

    def _root_public_pem_from_local_metadata(self) -> bytes:
        import base64

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        for path in sorted((self.trust_dir / "tuf").glob("**/metadata/root.json")):
            signed = json.loads(path.read_text())["signed"]
            [key_id] = signed["roles"]["root"]["keyids"]
            certificate = x509.load_pem_x509_certificate(base64.b64decode(signed["keys"][key_id]["keyval"]["public"]))
            return certificate.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        raise NotaryClientError(f"no root.json in {self.trust_dir}/tuf")
