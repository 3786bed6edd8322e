# The only entry point for developers and CI (.ci/run calls `make verify test`).
# One build profile (release) for everything: `make compile` copies the product binaries into
# bin/, and `make test` runs the suite against exactly those (docs/architecture.md).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := compile

CARGO ?= cargo
BINARIES := gitlab-shell gitlab-shell-authorized-keys-check gitlab-shell-authorized-principals-check gitlab-shell-check gitlab-shell-authorized-keys gitlab-sshd
# The commit the binaries report with -version (crates/gitlab-shell/build.rs). Exported to every
# cargo run, so compile, test and clippy agree on it and do not rebuild each other's output.
export GITLAB_SHELL_COMMIT := $(shell git describe --always --dirty --abbrev=7 --exclude='*' 2>/dev/null)
# tests take the product binaries from bin/ (what `make compile` ships), not target/release
TEST_ENV := GITLAB_SHELL_TEST_BINARIES=bin
# install: $(DESTDIR)$(PREFIX)/bin/<binary>, mode 755 (as GitLab Shell's `make install`), plus
# VERSION and config.yml.example in $(PREFIX) (the GitLab Shell home: the folder above bin/) and
# the man pages in $(MANDIR). docs/install.md.
PREFIX ?= /opt/gitlab-shell
DESTDIR ?=
MANDIR ?= /usr/local/share/man
MAN1 := $(wildcard support/man/*.1)
MAN5 := $(wildcard support/man/*.5)
# setup: the GitLab Shell home to prepare (config.yml, log and key folders) for GITLAB_SHELL_USER
GITLAB_SHELL_DIR ?= $(CURDIR)
GITLAB_SHELL_USER ?=
GITLAB_SHELL_NEW_SECRET ?=

.PHONY: compile build deps test e2e verify check demo clean install uninstall setup release

## compile: every workspace binary in the release profile (the product and the stub API and dev
## Gitaly that tests, demo and bench run); the product binaries (BINARIES) are copied into bin/
compile:
	@echo "==> cargo build --release: every workspace binary (a cold build takes a few minutes;"
	@echo "    cargo prints each crate as it compiles it)"
	$(CARGO) build --release --locked --workspace --bins
	install -d bin
	for b in $(BINARIES); do install -m755 "target/release/$$b" "bin/$$b"; done

build: compile

## deps: install missing system programs (git, openssh-server, git-lfs, haproxy, time)
deps:
	support/install-deps.sh

## test: every test of the workspace (unit, command, end-to-end through a real sshd)
test: deps compile
	$(TEST_ENV) $(CARGO) test --release --locked --workspace --no-fail-fast

## e2e: only the end-to-end tests (tests/e2e)
e2e: deps compile
	$(TEST_ENV) $(CARGO) test --release --locked -p gitlab-shell-e2e

## verify: formatting and lints
verify:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

## check: run bin/gitlab-shell-check (needs config.yml next to bin/)
check: compile
	bin/gitlab-shell-check

## release: the same build as compile (kept as a name for scripts that call it)
release: compile

## demo: a real git clone and push through sshd, GitLab Shell, the stub API and the dev Gitaly
demo: deps compile
	support/demo.sh

## install: copy what `make compile` built (bin/) into $(DESTDIR)$(PREFIX)/bin (mode 755), VERSION
## and config.yml.example into $(DESTDIR)$(PREFIX), man pages into $(DESTDIR)$(MANDIR); no cargo
install:
	@for b in $(BINARIES); do [[ -x "bin/$$b" ]] || \
	  { echo "make install: bin/$$b missing: run \`make compile\` first" >&2; exit 1; }; done
	install -d -m755 "$(DESTDIR)$(PREFIX)/bin" "$(DESTDIR)$(MANDIR)/man1" "$(DESTDIR)$(MANDIR)/man5"
	for b in $(BINARIES); do install -m755 "bin/$$b" "$(DESTDIR)$(PREFIX)/bin/$$b"; done
	install -m644 VERSION config.yml.example "$(DESTDIR)$(PREFIX)/"
	install -D -m755 support/setup.sh "$(DESTDIR)$(PREFIX)/support/setup.sh"
	install -m644 $(MAN1) "$(DESTDIR)$(MANDIR)/man1/"
	install -m644 $(MAN5) "$(DESTDIR)$(MANDIR)/man5/"

## uninstall: remove what `make install` installed (keeps config.yml, the secret and the logs)
uninstall:
	rm -f $(foreach b,$(BINARIES),"$(DESTDIR)$(PREFIX)/bin/$(b)")
	rm -f "$(DESTDIR)$(PREFIX)/VERSION" "$(DESTDIR)$(PREFIX)/config.yml.example"
	rm -f "$(DESTDIR)$(PREFIX)/support/setup.sh"
	rmdir "$(DESTDIR)$(PREFIX)/support" 2>/dev/null || true
	rm -f $(foreach m,$(MAN1),"$(DESTDIR)$(MANDIR)/man1/$(notdir $(m))")
	rm -f $(foreach m,$(MAN5),"$(DESTDIR)$(MANDIR)/man5/$(notdir $(m))")
	rmdir "$(DESTDIR)$(PREFIX)/bin" 2>/dev/null || true
	rmdir "$(DESTDIR)$(PREFIX)" 2>/dev/null || true

## setup: prepare the GitLab Shell home $(GITLAB_SHELL_DIR) for GITLAB_SHELL_USER (config.yml
## from the example when missing, log folder and auth_file folder owned by that user; no secret
## unless GITLAB_SHELL_NEW_SECRET=1); never overwrites existing files
setup:
	GITLAB_SHELL_USER="$(GITLAB_SHELL_USER)" GITLAB_SHELL_NEW_SECRET="$(GITLAB_SHELL_NEW_SECRET)" \
	  support/setup.sh "$(GITLAB_SHELL_DIR)"

clean:
	$(CARGO) clean
	rm -f $(addprefix bin/,$(BINARIES))

.PHONY: real-gitaly
## real-gitaly: GitLab's Gitaly 16.11.6 built from Debian trixie packages into target/real-gitaly
## (support/real-gitaly.sh; ~3 min of 2 cores and ~3.5 GB once, then reused in well under a second).
## The end-to-end tests run the Git tests against it as well (tests/e2e/real_gitaly.rs).
real-gitaly:
	support/real-gitaly.sh
test e2e: real-gitaly

.PHONY: bench
## bench: floor (sshd + git) vs gitolite3 vs ours vs our gitlab-sshd vs the Go gitlab-sshd, on 127.0.0.1, as root
## (~15 min; BENCH_QUICK=1 for a ~3 min smoke run); writes bench/results/latest.md
bench: compile
	bench/bench.sh

.PHONY: fuzz load
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := ssh_command argv pktline config_yaml api_json
## fuzz: each cargo-fuzz target (fuzz/, its own workspace) for FUZZ_SECONDS; installs cargo-fuzz
## when missing; libFuzzer needs nightly flags, hence RUSTC_BOOTSTRAP=1 on the stable toolchain.
## New inputs go to fuzz/target/corpus/<target>; the seeds in fuzz/corpus are replayed by `make test`.
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/corpus/$$t; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -s none $$t target/corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -rss_limit_mb=4096 2>&1 \
	    | tee target/fuzz-$$t.log | grep -E '^(stat::number_of_executed_units|.*DONE|SUMMARY|==[0-9]+==)'; \
	done; \
	grep -h '^stat::number_of_executed_units' $(addprefix target/fuzz-,$(addsuffix .log,$(FUZZ_TARGETS))) \
	  | awk '{ n += $$2 } END { printf "fuzz: %d executions over %d targets, 0 crashes\n", n, NR }'

## load: 100 concurrent gitlab-shell sessions for 60 s over loopback (the suite runs 5 s)
load: deps compile
	GLS_LOAD_SECONDS=60 $(TEST_ENV) $(CARGO) test --release --locked -p gitlab-shell-e2e load_sessions:: -- --nocapture

.PHONY: dist-tarball deb
# Packages (docs/packaging.md), from what `make compile` built; output in target/pkg/.
PKG_DIR := target/pkg
PKG_VERSION := $(shell cat VERSION)
PKG_ARCH := $(shell uname -m)
DEB_ARCH = $(shell dpkg --print-architecture)
TARBALL := gitlab-shell-rs-$(PKG_VERSION)-$(PKG_ARCH)-linux.tar.gz
## dist-tarball: target/pkg/<name>.tar.gz holding gitlab-shell/ (unpack into /opt), plus SHA256SUMS
dist-tarball: compile
	rm -rf "$(PKG_DIR)/tar" && mkdir -p "$(PKG_DIR)/tar"
	$(MAKE) --no-print-directory install DESTDIR="$(CURDIR)/$(PKG_DIR)/tar" PREFIX=/gitlab-shell \
	  MANDIR=/gitlab-shell/share/man
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$$(git log -1 --format=%ct 2>/dev/null || echo 0)" \
	  -C "$(PKG_DIR)/tar" -czf "$(PKG_DIR)/$(TARBALL)" gitlab-shell
	cd "$(PKG_DIR)" && sha256sum "$(TARBALL)" > SHA256SUMS && cat SHA256SUMS

## deb: target/pkg/gitlab-shell-rs_<version>-1_<arch>.deb with dpkg-deb from a staged tree
## (/opt/gitlab-shell, man pages in /usr/share/man); why not cargo-deb: docs/packaging.md
deb: compile
	support/build-deb.sh "$(PKG_DIR)" "$(PKG_VERSION)" "$(DEB_ARCH)"
