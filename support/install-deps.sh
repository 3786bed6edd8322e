#!/usr/bin/env bash
# Installs the system programs the tests, the demo and the benchmark need, when they are missing:
# git, OpenSSH (server and client), git-lfs, haproxy, GNU time, adduser, runuser, dpkg-deb,
# groff, and for the Geo tests' primary nginx, fcgiwrap (git http-backend), pv and python3.
# Uses apt-get when run as root on
# a Debian/Ubuntu machine; otherwise it only says what is missing. The Rust toolchain itself
# (cargo) is expected to be installed already (https://rustup.rs).
set -euo pipefail

# program to look for -> Debian package that provides it
declare -A wanted=(
  [git]=git
  [/usr/sbin/sshd]=openssh-server
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  [git-lfs]=git-lfs
  [haproxy]=haproxy
  [/usr/bin/time]=time
  [nginx]=nginx-light
  [fcgiwrap]=fcgiwrap
  [pv]=pv
  [python3]=python3
  # docs/install.md played by tests/e2e/operator_install.rs; `make deb`; the man page check
  [/usr/sbin/adduser]=adduser
  [/usr/sbin/runuser]=util-linux
  [dpkg-deb]=dpkg
  [groff]=groff-base
)

have() {
  case "$1" in
    /*) [[ -x "$1" ]] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
for prog in "${!wanted[@]}"; do
  if ! have "$prog"; then
    pkg="${wanted[$prog]}"
    [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
  fi
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi

if ((${#missing[@]} == 0)); then
  echo "install-deps: all present (git, openssh-server, openssh-client, git-lfs, haproxy, time, adduser, util-linux, dpkg, groff-base, nginx, fcgiwrap, pv, python3)"
  exit 0
fi

echo "install-deps: missing packages: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: not root; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: apt-get not available; install ${missing[*]} with your package manager" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: apt-get update"
apt-get update -qq
echo "install-deps: apt-get install -y --no-install-recommends ${missing[*]}"
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
