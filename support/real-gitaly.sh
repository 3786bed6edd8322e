#!/usr/bin/env bash
# Builds GitLab's own Gitaly 16.11.6 (gitaly, gitaly-hooks, gitaly-ssh, gitaly-lfs-smudge,
# gitaly-gpg) from Debian trixie packages only, into a cache folder, without installing anything
# and without touching the system's apt configuration (see docs/real-gitaly.md):
#
#   * a private apt view of trixie (own sources list, lists and cache folders under the cache);
#     only `apt-get update`, `apt-cache depends` and `apt-get download` are used;
#   * every .deb is unpacked with `dpkg -x` into the cache (the Go toolchain 1.24 into gotool/,
#     Gitaly's sources and their Go dependencies into root/usr/share/gocode);
#   * a GOPATH build (GO111MODULE=off, no module proxy) with that Go.
#
# Cache folder: $GITLAB_SHELL_REAL_GITALY_DIR, default <repo>/target/real-gitaly (~3.5 GB).
# Idempotent: when a finished build is found (bin/.stamp) it prints the bin folder and exits at
# once; an interrupted run resumes at the first unfinished stage. The Debian mirror is read from
# this machine's apt sources (REAL_GITALY_MIRROR overrides it). Prints the bin folder on stdout;
# progress goes to stderr.
set -euo pipefail

VERSION=16.11.6
BINS=(gitaly gitaly-hooks gitaly-ssh gitaly-lfs-smudge gitaly-gpg)
GO_PKGS=(golang-1.24-go golang-1.24-src)
SOURCE_PKG=golang-gitlab-gitlab-org-gitaly-dev
# imports of Gitaly that its package's Depends: does not declare (docs/real-gitaly.md)
EXTRA_ROOTS=(golang-github-aws-smithy-go-dev golang-github-cli-browser-dev golang-github-gogo-protobuf-dev
  golang-github-googleapis-enterprise-certificate-proxy-dev golang-github-urfave-cli-v2-dev)
# installs the same folder as golang-github-golang-protobuf-1-5-dev (they conflict in Debian)
DROP_PKGS=(golang-github-golang-protobuf-1-3-dev)

WS=$(cd "$(dirname "$0")/.." && pwd)
RG=${GITLAB_SHELL_REAL_GITALY_DIR:-$WS/target/real-gitaly}
STAMP=$RG/bin/.stamp

say() { printf 'real-gitaly: %s\n' "$*" >&2; }
die() { printf 'real-gitaly: error: %s\n' "$*" >&2; exit 1; }

built() {
  [[ -f $STAMP && $(cat "$STAMP") == "$VERSION" ]] || return 1
  local b
  for b in "${BINS[@]}"; do [[ -x $RG/bin/$b ]] || return 1; done
}

# fast path, without the lock: a finished build
if built; then
  echo "$RG/bin"
  exit 0
fi

mkdir -p "$RG"
# one build at a time (tests, make and the demo may all ask for it)
exec 9>"$RG/.lock"
if ! flock -n 9; then
  say "another build is running in $RG; waiting for it"
  flock 9
fi
if built; then
  echo "$RG/bin"
  exit 0
fi

for tool in apt-get apt-cache dpkg flock; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found: this script needs a Debian-like system"
done

start=$SECONDS

# ---- the Debian mirror, from this machine's apt sources -------------------------------------
mirror() {
  if [[ -n ${REAL_GITALY_MIRROR:-} ]]; then
    echo "$REAL_GITALY_MIRROR"
    return
  fi
  local f uri
  # one-line style: deb [options] URI suite components
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    uri=$(sed -E -n 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]].*/\2/p' "$f" |
      grep -E '/debian/?$' | head -n1 || true)
    [[ -n $uri ]] && { echo "${uri%/}"; return; }
  done
  # deb822 style: URIs: a b c
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    uri=$(sed -E -n 's/^URIs:[[:space:]]*//p' "$f" | tr ' ' '\n' | grep -E '/debian/?$' | head -n1 || true)
    [[ -n $uri ]] && { echo "${uri%/}"; return; }
  done
}
MIRROR=$(mirror)
[[ -n $MIRROR ]] || die "no Debian mirror (a URI ending in /debian) in /etc/apt/sources.list*; set REAL_GITALY_MIRROR"

# ---- the private apt view of trixie ---------------------------------------------------------
A=$RG/apt
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$RG/debs"
echo "deb [trusted=yes] $MIRROR trixie main" >"$A/trixie.list"
APT_OPTS=(-o "Dir::Etc::SourceList=$A/trixie.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o "Dir::State::status=/dev/null"
  -o APT::Sandbox::User=root -o Debug::NoLocking=1 -o Acquire::Retries=3)

if [[ ! -f $A/updated ]]; then
  say "apt-get update (trixie from $MIRROR, private lists in $A)"
  apt-get "${APT_OPTS[@]}" -q update >"$A/update.log" 2>&1 || {
    cat "$A/update.log" >&2
    die "apt-get update of the private trixie view failed (mirror $MIRROR)"
  }
  # apt-get update exits 0 even when every fetch failed: check that trixie's index arrived.
  if ! compgen -G "$A/lists/*_dists_trixie_main_binary-*_Packages*" >/dev/null; then
    grep -E '^(E|W|Err):' "$A/update.log" >&2 || true
    die "could not fetch trixie's package lists from $MIRROR (see $A/update.log)"
  fi
  touch "$A/updated"
fi

# Every root package must exist in trixie; say which do not.
missing=()
for p in "${GO_PKGS[@]}" "$SOURCE_PKG" "${EXTRA_ROOTS[@]}"; do
  apt-cache "${APT_OPTS[@]}" show "$p" >/dev/null 2>&1 || missing+=("$p")
done
((${#missing[@]} == 0)) || die "package(s) not found in trixie at $MIRROR: ${missing[*]}"

# ---- downloads --------------------------------------------------------------------------------
if [[ ! -f $RG/debs/closure.txt ]]; then
  say "resolving the Go dependency closure of $SOURCE_PKG"
  apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "$SOURCE_PKG" "${EXTRA_ROOTS[@]}" |
    grep -E '^golang-' | grep -vE '^golang-(go|src|any|doc|[0-9.]+(-go|-src|-doc)?)$' |
    sort -u >"$RG/debs/closure.tmp"
  for d in "${DROP_PKGS[@]}"; do sed -i "/^$d\$/d" "$RG/debs/closure.tmp"; done
  mv "$RG/debs/closure.tmp" "$RG/debs/closure.txt"
fi
mapfile -t CLOSURE <"$RG/debs/closure.txt"
say "${#CLOSURE[@]} source packages + the Go 1.24 toolchain"

download() { # $1 folder, rest: packages; only those without a .deb there yet
  local dir=$1 p want=()
  shift
  mkdir -p "$dir"
  for p in "$@"; do
    compgen -G "$dir/${p}_*.deb" >/dev/null || want+=("$p")
  done
  ((${#want[@]} == 0)) && return 0
  say "apt-get download: ${#want[@]} package(s) into $dir"
  (cd "$dir" && apt-get "${APT_OPTS[@]}" -q download "${want[@]}" >"$dir/download.log" 2>&1) || {
    grep -E '^(E|W):' "$dir/download.log" >&2 || tail -n 20 "$dir/download.log" >&2
    die "apt-get download failed (see $dir/download.log)"
  }
  for p in "${want[@]}"; do
    compgen -G "$dir/${p}_*.deb" >/dev/null || die "package $p was not downloaded"
  done
}
download "$RG/debs/go" "${GO_PKGS[@]}"
download "$RG/debs/src" "${CLOSURE[@]}"

# ---- unpacking ---------------------------------------------------------------------------------
if [[ ! -f $RG/gotool/.unpacked ]]; then
  say "dpkg -x the Go toolchain into $RG/gotool"
  rm -rf "$RG/gotool"
  for deb in "$RG"/debs/go/*.deb; do dpkg -x "$deb" "$RG/gotool"; done
  touch "$RG/gotool/.unpacked"
fi
if [[ ! -f $RG/root/.unpacked ]]; then
  say "dpkg -x ${#CLOSURE[@]} packages into $RG/root"
  rm -rf "$RG/root"
  mkdir -p "$RG/root"
  for p in "${CLOSURE[@]}"; do
    for deb in "$RG/debs/src/${p}"_*.deb; do dpkg -x "$deb" "$RG/root"; done
  done
  touch "$RG/root/.unpacked"
fi

# ---- the GOPATH build ---------------------------------------------------------------------------
export GOROOT=$RG/gotool/usr/lib/go-1.24
export PATH=$GOROOT/bin:$PATH GOPATH=$RG/root/usr/share/gocode GO111MODULE=off GOFLAGS= \
  GOPROXY=off GOTOOLCHAIN=local GOCACHE=$RG/gocache GOTELEMETRY=off CGO_ENABLED=1
[[ -x $GOROOT/bin/go ]] || die "no go binary at $GOROOT/bin/go"
SRC=$GOPATH/src/gitlab.com/gitlab-org/gitaly/v16
[[ -d $SRC ]] || die "Gitaly sources missing at $SRC ($SOURCE_PKG unpacked wrongly?)"
cd "$SRC"
CMDS=()
for b in "${BINS[@]}"; do CMDS+=("./cmd/$b"); done

say "checking that every import resolves (go list)"
unresolved=$(go list -e -deps -f '{{if .Error}}{{.ImportPath}}{{end}}' "${CMDS[@]}" 2>/dev/null | sort -u)
[[ -z $unresolved ]] || die "imports not provided by any downloaded package (add the -dev package to EXTRA_ROOTS):
$unresolved"

say "go build ${BINS[*]} ($(go version | cut -d' ' -f3); a few minutes the first time)"
mkdir -p "$RG/bin"
rm -f "$STAMP"
go build -trimpath -ldflags "-X gitlab.com/gitlab-org/gitaly/v16/internal/version.version=$VERSION" \
  -o "$RG/bin/" "${CMDS[@]}"
"$RG/bin/gitaly" -version >&2 || die "the built gitaly does not run"
echo "$VERSION" >"$STAMP"
say "done in $((SECONDS - start)) s: $RG/bin"
echo "$RG/bin"
