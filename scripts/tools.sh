#!/usr/bin/env bash
# Builds the real programs signgate's e2e and interop tests run (etcd, shell-operator,
# kube-apiserver + kubectl, cosign v3 and v2) from their Go modules, at the versions pinned in
# scripts/versions.env, into a cache outside the checkout:
#
#   ${SIGNGATE_TOOLS_DIR:-$HOME/.cache/signgate/tools}/<program>-<version>/<binary>
#
# (tests/support/tools.py reads the same layout). A program whose binaries are already there is
# not built again, so a second call does nothing; a version bump in versions.env builds anew.
#
# Usage: scripts/tools.sh [--list] [program...]
#   programs: etcd shell-operator kubernetes cosign-v3 cosign-v2 (default: all, in this order;
#   kube-apiserver and kubectl are accepted for kubernetes). --list prints every binary with its
#   version, path and whether it is built, and builds nothing.
# Environment: SIGNGATE_TOOLS_DIR (the cache), GO (the go command), SIGNGATE_TOOLS_JOBS (go's -p:
#   how many packages compile at once; each compile of a large Kubernetes package can take ~1 GiB).
#
# No upstream Go code enters the repository: modules come from the Go module proxy into Go's own
# caches, and the wrapper modules some programs need are generated in a temporary directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"

TOOLS_DIR=${SIGNGATE_TOOLS_DIR:-$HOME/.cache/signgate/tools}
PROGRAMS=(etcd shell-operator kubernetes cosign-v3 cosign-v2)

die() { echo "tools.sh: $*" >&2; exit 1; }

version_of() {
    case $1 in
        etcd) echo "$ETCD" ;;
        shell-operator) echo "$SHELL_OPERATOR" ;;
        kubernetes) echo "$KUBERNETES" ;;
        cosign-v3) echo "$COSIGN_V3" ;;
        cosign-v2) echo "$COSIGN_V2" ;;
    esac
}

binaries_of() {
    case $1 in
        kubernetes) echo "kube-apiserver kubectl" ;;
        cosign-*) echo "cosign" ;;
        *) echo "$1" ;;
    esac
}

# What is built, for the "building" line.
source_of() {
    case $1 in
        etcd) echo "go.etcd.io/etcd/server/v3@$ETCD" ;;
        shell-operator) echo "github.com/flant/shell-operator/cmd/shell-operator@$SHELL_OPERATOR" ;;
        kubernetes) echo "k8s.io/kubernetes/cmd/{kube-apiserver,kubectl}@$KUBERNETES" ;;
        cosign-v3) echo "github.com/sigstore/cosign/v3/cmd/cosign@$COSIGN_V3" ;;
        cosign-v2) echo "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_V2" ;;
    esac
}

dir_of() { echo "$TOOLS_DIR/$1-$(version_of "$1")"; }

is_built() {
    local program=$1 binary
    for binary in $(binaries_of "$program"); do
        [[ -f "$(dir_of "$program")/$binary" && -x "$(dir_of "$program")/$binary" ]] || return 1
    done
}

canonical() {
    case $1 in
        kube-apiserver | kubectl) echo kubernetes ;;
        *)
            local p
            for p in "${PROGRAMS[@]}"; do
                [[ $p == "$1" ]] && { echo "$p"; return 0; }
            done
            return 1
            ;;
    esac
}

human_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# --- temporary directories, removed however the script ends -------------------------------------
TEMPS=()
cleanup() {
    local d
    for d in "${TEMPS[@]+"${TEMPS[@]}"}"; do
        # Go's module cache marks extracted files read-only; a wrapper dir holds none, but a
        # chmod first keeps rm from failing on anything go left behind.
        [[ -e $d ]] && { chmod -R u+w "$d" 2>/dev/null || true; rm -rf "$d"; }
    done
}
trap cleanup EXIT

# --- running go, with the reason on failure --------------------------------------------------------
CURRENT=""        # "<program> <version>", for messages
FAILED_LOG=""     # where a failed build's whole log is kept, under $TOOLS_DIR
LOG=""            # the current build's go output
PEAK_FILE=""      # /usr/bin/time's max-RSS lines (KiB), one per go command

# Every go command runs in a directory of the script's own (the wrapper, or /), never in the caller's
# working directory, which may be replaced while a long build runs (a re-created worktree).
# run_go DIR ARGS...: runs `go ARGS` in DIR; on failure, exits naming the program, the version,
# the command and the tail of go's output (a proxy refusal, a compile error, a missing module).
run_go() {
    local dir=$1; shift
    echo "  \$ go $*" >>"$LOG"
    local -a timer=()
    if [[ -x /usr/bin/time ]]; then
        timer=(/usr/bin/time -a -o "$PEAK_FILE" -f '%M')
    fi
    if ! (cd "$dir" && "${timer[@]+"${timer[@]}"}" "$GO" "$@") >>"$LOG" 2>&1; then
        {
            echo "tools.sh: building $CURRENT failed: go $*"
            echo "---- last lines of go's output ----"
            tail -n 25 "$LOG" | grep -v '^Command exited with non-zero status' || true
            cp "$LOG" "$TOOLS_DIR/$FAILED_LOG" 2>/dev/null &&
                echo "---- whole log: $TOOLS_DIR/$FAILED_LOG ----"
        } >&2
        exit 1
    fi
}

# A module of our own, in a temp dir, for programs that `go install module@version` cannot build
# (their go.mod has replace directives, which only apply to the main module).
# Sets WORK (not printed: a $(...) subshell would lose the cleanup registration).
WORK=""
wrapper_module() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/signgate-tools-$1.XXXXXX")
    TEMPS+=("$WORK")
    run_go "$WORK" mod init "signgate.invalid/tools/$1"
}

# --- one function per program: build into $1 (the staging directory) -------------------------------

build_etcd() {
    # server/v3's go.mod replaces its sibling modules with ../api etc.; as a dependency of a
    # wrapper those replaces are ignored and the released sibling versions are used instead.
    local out=$1 work
    wrapper_module etcd
    work=$WORK
    run_go "$work" get -tool "go.etcd.io/etcd/server/v3@$ETCD"
    run_go "$work" build -p "$JOBS" -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
}

build_shell-operator() {
    # Repeat upstream's one replace (go.mod: go-openapi/validate => flant's fork), without which
    # the hooks' OpenAPI validation messages differ from the released binary's.
    local out=$1 work
    wrapper_module shell-operator
    work=$WORK
    run_go "$work" mod edit -replace=github.com/go-openapi/validate=github.com/flant/go-openapi-validate@v0.19.12-flant.0
    # The SDK version the module proxy serves (versions.env says why it differs from upstream's).
    if [[ -n ${SHELL_OPERATOR_MODULE_SDK:-} ]]; then
        run_go "$work" mod edit "-replace=github.com/deckhouse/module-sdk=github.com/deckhouse/module-sdk@$SHELL_OPERATOR_MODULE_SDK"
    fi
    run_go "$work" get -tool "github.com/flant/shell-operator/cmd/shell-operator@$SHELL_OPERATOR"
    run_go "$work" build -p "$JOBS" -trimpath \
        -ldflags "-s -w -X github.com/flant/shell-operator/pkg/app.Version=$SHELL_OPERATOR" \
        -o "$out/shell-operator" github.com/flant/shell-operator/cmd/shell-operator
}

build_kubernetes() {
    # k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0
    # and replaces them with ./staging paths. The wrapper replaces each with its published
    # release, v0.<minor>.<patch>; the list comes from k/k's own go.mod, as it changes by release
    # (1.36 added k8s.io/streaming and k8s.io/cri-streaming).
    local out=$1 work gomod staging m major minor patch
    IFS=. read -r major minor patch <<<"${KUBERNETES#v}"
    staging="v0.$minor.$patch"
    wrapper_module kubernetes
    work=$WORK
    run_go "$work" mod download -json "k8s.io/kubernetes@$KUBERNETES"
    gomod=$(cd "$work" && "$GO" mod download -json "k8s.io/kubernetes@$KUBERNETES" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    local -a edits=()
    for m in $(cd "$work" && "$GO" mod edit -json "$gomod" |
        python3 -c 'import json,sys; [print(r["Path"]) for r in json.load(sys.stdin)["Require"] if r["Version"] == "v0.0.0"]'); do
        edits+=("-replace=$m=$m@$staging")
    done
    [[ ${#edits[@]} -gt 0 ]] || die "building $CURRENT failed: no v0.0.0 staging requirements found in $gomod"
    run_go "$work" mod edit "${edits[@]}"
    run_go "$work" get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES" "k8s.io/kubernetes/cmd/kubectl@$KUBERNETES"
    # The version the binaries report (kubectl version, /version), as k/k's hack/lib/version.sh
    # sets it; without it they report v0.0.0-master.
    local ld="-s -w" pkg
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ld+=" -X $pkg.gitVersion=$KUBERNETES -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    run_go "$work" build -p "$JOBS" -trimpath -ldflags "$ld" -o "$out/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
}

build_cosign() {
    # cosign's go.mod has no replace: `go install module@version` builds it as released, and the
    # version it prints comes from the module's build info.
    local out=$1 module=$2 version=$3 work
    work=$(mktemp -d "${TMPDIR:-/tmp}/signgate-tools-cosign.XXXXXX")
    TEMPS+=("$work")
    GOBIN=$out run_go "$work" install -p "$JOBS" -trimpath -ldflags "-s -w" "$module/cmd/cosign@$version"
}
build_cosign-v3() { build_cosign "$1" github.com/sigstore/cosign/v3 "$COSIGN_V3"; }
build_cosign-v2() { build_cosign "$1" github.com/sigstore/cosign/v2 "$COSIGN_V2"; }

# --- build one program, once, under a lock --------------------------------------------------------

build() {
    local program=$1 version dest lock stage start elapsed peak
    version=$(version_of "$program")
    dest=$(dir_of "$program")
    CURRENT="$program $version"
    FAILED_LOG="$program-$version.failed.log"
    if is_built "$program"; then
        echo "$program $version: cached ($dest)"
        return 0
    fi
    mkdir -p "$TOOLS_DIR"
    # One lock per program and version: a second concurrent call waits, then finds it cached.
    lock="$TOOLS_DIR/.$program-$version.lock"
    exec {lockfd}>"$lock"
    if ! flock -n "$lockfd"; then
        echo "$program $version: another tools.sh is building it; waiting for $lock"
        flock "$lockfd"
    fi
    if is_built "$program"; then
        echo "$program $version: cached ($dest)"
        exec {lockfd}>&-
        return 0
    fi
    find_go
    # Staged next to the destination, so that the final rename is atomic (same filesystem): a
    # reader sees either no directory or a complete one.
    stage=$(mktemp -d "$TOOLS_DIR/.build-$program-$version.XXXXXX")
    TEMPS+=("$stage")
    LOG="$stage.log"
    PEAK_FILE="$stage.rss"
    TEMPS+=("$LOG" "$PEAK_FILE")
    : >"$LOG"
    : >"$PEAK_FILE"
    echo "$program $version: building $(source_of "$program") with $(cd / && "$GO" env GOVERSION) (-p $JOBS, CGO_ENABLED=0) ..."
    start=$(date +%s)
    "build_$program" "$stage"
    elapsed=$(($(date +%s) - start))
    local binary
    for binary in $(binaries_of "$program"); do
        [[ -x "$stage/$binary" ]] || die "building $CURRENT failed: go reported success but $binary is missing"
    done
    chmod 0755 "$stage"
    rm -rf "$dest"    # an incomplete directory from an older layout; we hold the lock
    mv -T "$stage" "$dest"
    rm -f "$TOOLS_DIR/$FAILED_LOG"
    peak=""
    if [[ -s $PEAK_FILE ]]; then
        peak=$(sort -n "$PEAK_FILE" | tail -n 1)
        peak=", largest process $((peak / 1024)) MiB"
    fi
    echo "$program $version: built in $(human_time "$elapsed")$peak -> $dest"
    exec {lockfd}>&-
}

find_go() {
    [[ -n ${GO:-} ]] && return 0
    GO=$(command -v go || true)
    [[ -z $GO && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
    [[ -n $GO ]] || die "building $CURRENT needs the go command (Go >= 1.26): none on PATH or at /usr/local/go/bin/go; set GO=/path/to/go"
    return 0
}

# --- main ----------------------------------------------------------------------------------------

list=false
requested=()
for arg in "$@"; do
    case $arg in
        --list) list=true ;;
        -h | --help) sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
        -*) die "unknown option '$arg' (usage: scripts/tools.sh [--list] [program...])" ;;
        *)
            p=$(canonical "$arg") || die "unknown program '$arg' (known: ${PROGRAMS[*]} kube-apiserver kubectl)"
            [[ " ${requested[*]-} " == *" $p "* ]] || requested+=("$p")
            ;;
    esac
done
[[ ${#requested[@]} -gt 0 ]] || requested=("${PROGRAMS[@]}")

if $list; then
    for program in "${requested[@]}"; do
        for binary in $(binaries_of "$program"); do
            path="$(dir_of "$program")/$binary"
            state=missing
            [[ -f $path && -x $path ]] && state=built
            printf '%s\t%s\t%s\t%s\n' "$program" "$(version_of "$program")" "$path" "$state"
        done
    done
    exit 0
fi

cpus=$(nproc 2>/dev/null || echo 2)
JOBS=${SIGNGATE_TOOLS_JOBS:-$((cpus < 4 ? cpus : 4))}
export CGO_ENABLED=0

total_start=$(date +%s)
for program in "${requested[@]}"; do
    build "$program"
done
echo "tools: done in $(human_time $(($(date +%s) - total_start))) (${TOOLS_DIR})"
