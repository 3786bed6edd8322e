# The only entry point for developers and CI (.ci/run calls `make verify test`).
# Tests and the test-support servers build in the release profile; the shipped binaries in bin/
# are built once more in the `dist` profile (fat LTO, one codegen unit: less code touched per
# start-up, so less memory and time per sshd call), and `make test` runs the suite against them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := compile

CARGO ?= cargo
BINARIES := gitlab-shell gitlab-shell-authorized-keys-check gitlab-shell-authorized-principals-check gitlab-shell-check gitlab-shell-authorized-keys gitlab-sshd
# the packages the shipped binaries come from
PRODUCT_PACKAGES := -p gitlab-shell -p gitlab-shell-authorized-keys -p gitlab-sshd
# tests take the product binaries from bin/ (what `make compile` ships), not target/release
TEST_ENV := GITLAB_SHELL_TEST_BINARIES=bin
# install: $(DESTDIR)$(PREFIX)/bin/<binary>, mode 755 (as GitLab Shell's `make install`)
PREFIX ?= /usr/local
DESTDIR ?=
# setup: the GitLab Shell home to prepare (config.yml, secret, log and key folders)
GITLAB_SHELL_DIR ?= $(CURDIR)

.PHONY: compile build deps test e2e verify check demo clean install setup

## compile: the product binaries (BINARIES), `dist` profile, copied into bin/; plus the release
## build of every workspace binary (the stub API and dev Gitaly that tests, demo and bench run)
compile:
	$(CARGO) build --release --locked --workspace --bins
	$(CARGO) build --profile dist --locked $(PRODUCT_PACKAGES) --bins
	install -d bin
	for b in $(BINARIES); do install -m755 "target/dist/$$b" "bin/$$b"; done

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

## demo: a real git clone and push through sshd, GitLab Shell, the stub API and the dev Gitaly
demo: deps compile
	support/demo.sh

## install: copy the binaries into $(DESTDIR)$(PREFIX)/bin with mode 755
install: compile
	install -d "$(DESTDIR)$(PREFIX)/bin"
	for b in $(BINARIES); do install -m755 "bin/$$b" "$(DESTDIR)$(PREFIX)/bin/$$b"; done

## setup: prepare the GitLab Shell home $(GITLAB_SHELL_DIR) (config.yml from the example when
## missing, secret 0600, log folder, auth_file folder 0700); never overwrites existing files
setup:
	support/setup.sh "$(GITLAB_SHELL_DIR)"

clean:
	$(CARGO) clean
	rm -f $(addprefix bin/,$(BINARIES))

.PHONY: bench
## bench: floor (sshd + git) vs gitolite3 vs ours over a private sshd on 127.0.0.1, as root
## (~10 min; BENCH_QUICK=1 for a ~2 min smoke run); writes bench/results/latest.md
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
