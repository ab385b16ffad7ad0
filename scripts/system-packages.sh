#!/usr/bin/env bash
# Install the Debian packages that tests, the demo and benchmarks run for real:
#   docker-registry  the OCI registry (distribution 2.8) that tests start on 127.0.0.1
#   notary           notary-server and the notary client, for Notary v1 (DCT) tests
#   openssl          used by the Notary tests to read the client's root key
#   bubblewrap       the e2e tests run shell-operator and the hook as in the image: uid 65532 on a
#                    read-only root
# Usage: system-packages.sh [--demo]   (--demo: only what `make demo` needs)
# Idempotent: does nothing when everything is present.
set -euo pipefail

needed=()
command -v docker-registry >/dev/null 2>&1 || needed+=(docker-registry)
if [ "${1:-}" != "--demo" ]; then
    command -v notary-server  >/dev/null 2>&1 || needed+=(notary)
    command -v openssl        >/dev/null 2>&1 || needed+=(openssl)
    command -v bwrap          >/dev/null 2>&1 || needed+=(bubblewrap)
fi
if [ ${#needed[@]} -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "signgate: please install as root: apt-get install ${needed[*]}" >&2
        exit 1
    fi
fi
echo "signgate: installing Debian packages: ${needed[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
