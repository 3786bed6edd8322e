#!/usr/bin/env bash
# `make bench`: installs what the benchmark needs when missing (root + apt-get), then runs
# bench/bench.py. Environment: BENCH_QUICK=1 (smoke run, ~3 min), BENCH_SYSTEMS=floor,gitolite,ours,sshd,go-sshd
# (a subset), BENCH_GO=0 (skip the Go keys-check anchor), BENCH_KEEP=1 (keep bench/work/run),
# BENCH_OUT=file (default bench/results/latest.md), BENCH_BIN=dir (default bin/).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "bench: must run as root (it creates two system users and runs private sshd instances)" >&2
  exit 1
fi
support/install-deps.sh
command -v python3 >/dev/null 2>&1 || { echo "bench: python3 missing" >&2; exit 1; }
if [[ ! -x /usr/share/gitolite3/gitolite-shell ]]; then
  echo "bench: installing gitolite3 (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gitolite3 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gitolite3; }
fi
exec python3 bench/bench.py "$@"
