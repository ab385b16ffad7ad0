"""Test-side registry client and image builders (no Docker, no skopeo needed).

Deliberately separate from the production registry client: tests set registry state up with this
module and then check the production code against it, so a bug shared by both would go unnoticed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Literal, Sequence
from urllib.parse import urljoin

import requests

if TYPE_CHECKING:
    from .registry import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# Without all four, the registry may serve a different manifest (and digest) than was pushed.
ALL_MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)

MediaFamily = Literal["oci", "docker"]
Platform = tuple[str, ...]  # (os, architecture) or (os, architecture, variant)
DEFAULT_PLATFORMS: tuple[Platform, ...] = (("linux", "amd64"), ("linux", "arm64"))


class RegistryError(RuntimeError):
    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> {status}: {body[:500]}")
        self.status = status
        self.body = body


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: object) -> bytes:
    """Compact JSON, the way Go's encoding/json (ggcr, cosign) writes manifests."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y",scope="repository:a:pull,push"`` → ("bearer", {...}).
    Values are quoted strings that may contain commas, so a regex is used instead of split(',')."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest)}
    return scheme.lower(), params


def _actions_for(method: str) -> str:
    # distribution 2.8 maps GET/HEAD to pull, writes to push (plus pull), DELETE to delete.
    if method in ("GET", "HEAD"):
        return "pull"
    if method == "DELETE":
        return "delete"
    return "pull,push"


class RegistryHTTP:
    """Minimal authenticated client for one :class:`Registry`.

    Basic auth is sent after a Basic challenge; Bearer tokens are fetched per (repository, actions)
    from the challenge's realm and cached. ``anonymous=True`` never sends credentials, which is how
    tests check that the registry denies anonymous pushes.
    """

    def __init__(self, registry: "Registry", *, username: str | None = None,
                 password: str | None = None, anonymous: bool = False,
                 verify: bool | str | None = None, timeout: float = 10.0) -> None:
        self.registry = registry
        self.host = registry.host
        self.base_url = registry.url
        self.username = None if anonymous else (username or registry.username)
        self.password = None if anonymous else (password or registry.password)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # never route loopback traffic through a proxy
        self.session.verify = verify if verify is not None else (
            str(registry.ca_path) if registry.ca_path else True)
        self._basic = False
        self._tokens: dict[str, str] = {}

    # -- transport -------------------------------------------------------------------------------

    def request(self, method: str, url_or_path: str, *, repo: str | None = None,
                expect: Iterable[int] = (200,), **kwargs: object) -> requests.Response:
        """Send a request, answering one auth challenge; raise RegistryError unless status is expected."""
        url = urljoin(self.base_url + "/", url_or_path.lstrip("/")) \
            if not url_or_path.startswith("http") else url_or_path
        scope = f"repository:{repo}:{_actions_for(method)}" if repo else None
        response = self._send(method, url, scope, **kwargs)
        if response.status_code == 401 and self._answer_challenge(response, scope):
            response = self._send(method, url, scope, **kwargs)
        if response.status_code not in set(expect):
            raise RegistryError(method, url, response.status_code, response.text)
        return response

    def _send(self, method: str, url: str, scope: str | None, **kwargs: object) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[arg-type]
        token = self._tokens.get(scope or "")
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        auth = (self.username, self.password) if self._basic and self.username else None
        return self.session.request(method, url, headers=headers, auth=auth,
                                    timeout=self.timeout, allow_redirects=True, **kwargs)

    def _answer_challenge(self, response: requests.Response, scope: str | None) -> bool:
        """True if the challenge was answered and the request is worth retrying."""
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self._basic or not self.username:
                return False
            self._basic = True
            return True
        if scheme == "bearer" and "realm" in params:
            # Requests without a repository (/v2/, _catalog) use the scope the registry asked for.
            token = self._fetch_token(params["realm"], params.get("service"),
                                      scope or params.get("scope"))
            if token is None:
                return False
            self._tokens[scope or ""] = token
            return True
        return False

    def _fetch_token(self, realm: str, service: str | None, scope: str | None) -> str | None:
        query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        auth = (self.username, self.password) if self.username else None
        response = self.session.get(realm, params=query, auth=auth, timeout=self.timeout)
        if response.status_code != 200:
            raise RegistryError("GET", realm, response.status_code, response.text)
        body = response.json()
        return body.get("token") or body.get("access_token")

    # -- blobs -----------------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo, expect=(200, 404))
        return response.status_code == 200

    def push_blob(self, repo: str, data: bytes) -> str:
        """Monolithic upload: POST a session, PUT the bytes with the digest. Returns the digest."""
        digest = sha256_digest(data)
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, expect=(202,))
        location = urljoin(self.base_url + "/", start.headers["Location"])
        sep = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{sep}digest={digest}", repo=repo, expect=(201,),
                     data=data, headers={"Content-Type": "application/octet-stream"})
        return digest

    def get_blob(self, repo: str, digest: str) -> bytes:
        data = self.request("GET", f"/v2/{repo}/blobs/{digest}", repo=repo).content
        if sha256_digest(data) != digest:
            raise AssertionError(f"blob {digest} served with different content")
        return data

    # -- manifests -------------------------------------------------------------------------------

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT ``body`` as ``ref`` (tag or digest) with Content-Type ``media_type``; returns its digest."""
        response = self.request("PUT", f"/v2/{repo}/manifests/{ref}", repo=repo, expect=(201,),
                                data=body, headers={"Content-Type": media_type})
        digest = sha256_digest(body)
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise AssertionError(f"registry computed {served}, client {digest}")
        return digest

    def get_manifest(self, repo: str, ref: str,
                     accept: Sequence[str] = ALL_MANIFEST_TYPES) -> tuple[bytes, str]:
        """(body, Content-Type without parameters); raises RegistryError (status 404) if absent."""
        response = self.request("GET", f"/v2/{repo}/manifests/{ref}", repo=repo,
                                headers={"Accept": ", ".join(accept)})
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return response.content, media_type

    def head_manifest(self, repo: str, ref: str,
                      accept: Sequence[str] = ALL_MANIFEST_TYPES) -> tuple[str, str] | None:
        """(Docker-Content-Digest, Content-Type) or None on 404. distribution 2.8 answers 404 for an
        OCI manifest whose type is not in Accept, so the default sends all four types."""
        response = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", repo=repo,
                                expect=(200, 404), headers={"Accept": ", ".join(accept)})
        if response.status_code == 404:
            return None
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return response.headers.get("Docker-Content-Digest", ""), media_type

    def find_manifest(self, repo: str, ref: str,
                      accept: Sequence[str] = ALL_MANIFEST_TYPES) -> tuple[bytes, str] | None:
        """Like get_manifest but None on 404 (e.g. no .sig tag yet)."""
        try:
            return self.get_manifest(repo, ref, accept)
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise

    def delete_manifest(self, repo: str, digest: str) -> None:
        self.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo=repo, expect=(202,))

    def list_tags(self, repo: str) -> list[str]:
        response = self.request("GET", f"/v2/{repo}/tags/list", repo=repo, expect=(200, 404))
        if response.status_code == 404:
            return []
        return list(response.json().get("tags") or [])

    def reference(self, repo: str, ref: str) -> str:
        """``127.0.0.1:PORT/repo:tag`` or ``127.0.0.1:PORT/repo@sha256:...``."""
        sep = "@" if ":" in ref else ":"
        return f"{self.host}/{repo}{sep}{ref}"

    def close(self) -> None:
        self.session.close()


# -- image builders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushedImage:
    repo: str
    tag: str | None  # None for index children, which are pushed by digest only
    digest: str
    size: int
    media_type: str
    manifest: bytes
    reference: str  # host/repo:tag, or host/repo@digest when there is no tag
    host: str
    config_digest: str
    layer_digests: tuple[str, ...]
    platform: Platform | None = None

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repo}@{self.digest}"

    @property
    def repository(self) -> str:
        """What cosign puts in docker-reference: registry host + repository, no tag or digest."""
        return f"{self.host}/{self.repo}"

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


@dataclass(frozen=True)
class PushedIndex:
    repo: str
    tag: str | None
    digest: str
    size: int
    media_type: str
    manifest: bytes
    reference: str
    host: str
    children: tuple[PushedImage, ...] = field(default_factory=tuple)

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repo}@{self.digest}"

    @property
    def repository(self) -> str:
        return f"{self.host}/{self.repo}"

    def child(self, architecture: str) -> PushedImage:
        for image in self.children:
            if image.platform and image.platform[1] == architecture:
                return image
        raise KeyError(architecture)


def layer_tar_gz(content: bytes, name: str = "content.txt") -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip'd tar) with fixed metadata, so equal content gives equal digests."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(content), 0, 0o644
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return tar_bytes, gzip.compress(tar_bytes, mtime=0)


def image_config(diff_id: str, platform: Platform) -> bytes:
    os_name, arch = platform[0], platform[1]
    config: dict[str, object] = {"architecture": arch, "os": os_name}
    if len(platform) > 2:
        config["variant"] = platform[2]
    config["config"] = {"Cmd": ["/content.txt"]}
    config["rootfs"] = {"type": "layers", "diff_ids": [diff_id]}
    return canonical_json(config)


def image_manifest(config: tuple[str, int], layer: tuple[str, int], family: MediaFamily, *,
                   omit_media_type: bool = False,
                   annotations: dict[str, str] | None = None) -> tuple[bytes, str]:
    """(manifest body, media type). ``omit_media_type`` mimics umoci (OCI only: Docker schema 2
    requires the field and distribution rejects it without)."""
    if family == "docker":
        if omit_media_type:
            raise ValueError("Docker schema 2 manifests must carry mediaType")
        media_type, config_type, layer_type = DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP
    else:
        media_type, config_type, layer_type = OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP
    body: dict[str, object] = {"schemaVersion": 2}
    if not omit_media_type:
        body["mediaType"] = media_type
    body["config"] = {"mediaType": config_type, "size": config[1], "digest": config[0]}
    body["layers"] = [{"mediaType": layer_type, "size": layer[1], "digest": layer[0]}]
    if annotations:
        body["annotations"] = dict(annotations)
    return canonical_json(body), media_type


def _as_bytes(content: bytes | str | None) -> bytes:
    if content is None:
        return f"signgate test image {uuid.uuid4().hex}\n".encode()
    return content.encode() if isinstance(content, str) else content


def push_image(http: RegistryHTTP, repo: str, tag: str | None = "latest", *,
               content: bytes | str | None = None, media_type: MediaFamily = "oci",
               platform: Platform = ("linux", "amd64"), omit_media_type: bool = False,
               annotations: dict[str, str] | None = None) -> PushedImage:
    """Push a one-layer image. Default content is unique, so every call gives a new digest; equal
    ``content`` (and platform/media type) gives an equal digest. ``tag=None`` pushes by digest."""
    tar_bytes, layer = layer_tar_gz(_as_bytes(content))
    config = image_config(sha256_digest(tar_bytes), platform)
    layer_digest = http.push_blob(repo, layer)
    config_digest = http.push_blob(repo, config)
    body, mt = image_manifest((config_digest, len(config)), (layer_digest, len(layer)), media_type,
                              omit_media_type=omit_media_type, annotations=annotations)
    digest = sha256_digest(body)
    http.put_manifest(repo, tag or digest, body, mt)
    return PushedImage(repo=repo, tag=tag, digest=digest, size=len(body), media_type=mt,
                       manifest=body, reference=http.reference(repo, tag or digest), host=http.host,
                       config_digest=config_digest, layer_digests=(layer_digest,),
                       platform=platform)


def index_manifest(children: Sequence[PushedImage], family: MediaFamily, *,
                   omit_media_type: bool = False) -> tuple[bytes, str]:
    media_type = DOCKER_LIST if family == "docker" else OCI_INDEX
    entries = []
    for child in children:
        assert child.platform is not None
        platform: dict[str, str] = {"architecture": child.platform[1], "os": child.platform[0]}
        if len(child.platform) > 2:
            platform["variant"] = child.platform[2]
        entries.append({**child.descriptor(), "platform": platform})
    body: dict[str, object] = {"schemaVersion": 2}
    if not omit_media_type:
        body["mediaType"] = media_type
    body["manifests"] = entries
    return canonical_json(body), media_type


def push_index(http: RegistryHTTP, repo: str, tag: str | None = "latest",
               platforms: Sequence[Platform] = DEFAULT_PLATFORMS, *,
               media_type: MediaFamily = "oci", content: bytes | str | None = None,
               omit_media_type: bool = False) -> PushedIndex:
    """Push one image per platform (by digest) and an index over them, tagged ``tag``."""
    base = _as_bytes(content)
    children = tuple(
        push_image(http, repo, None, content=base + "/".join(p).encode(), media_type=media_type,
                   platform=tuple(p))
        for p in platforms
    )
    body, mt = index_manifest(children, media_type, omit_media_type=omit_media_type)
    digest = sha256_digest(body)
    http.put_manifest(repo, tag or digest, body, mt)
    return PushedIndex(repo=repo, tag=tag, digest=digest, size=len(body), media_type=mt,
                       manifest=body, reference=http.reference(repo, tag or digest),
                       host=http.host, children=children)
