#!/usr/bin/env python3
"""The benchmark harness (`make bench`): three ways to serve the same repositories over a private
sshd on 127.0.0.1, measured side by side in one run.

  floor     OpenSSH + a forced command that execs git-upload-pack / git-receive-pack directly;
  gitolite  gitolite3 (Debian package) for a dedicated system user;
  ours      OpenSSH + AuthorizedKeysCommand = our gitlab-shell-authorized-keys-check, forced
            command `gitlab-shell key-N`, the stub internal API and the dev Gitaly;
  sshd      our gitlab-sshd (GitLab Shell's own SSH server) with ours's stub API, dev Gitaly and
            repositories: no OpenSSH, no forced command;
  go-sshd   the Go gitlab-sshd 14.35 in the same place (same config, API, Gitaly, repositories);
  ours-real the same on GitLab's own Gitaly 16.11.6 (support/real-gitaly.sh);
  go-real   the same sshd, keys check, API and real Gitaly, with the Go GitLab Shell 14.35 as
            the forced command (the figures an operator of a GitLab node would see).

Runs as root (it creates two system users and starts sshd); everything listens on 127.0.0.1 only
and every process it starts is stopped by PID at the end. See bench/README.md.
"""

import json
import os
import platform
import pwd
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TOP = BENCH.parent
PRODUCT_BIN = Path(os.environ.get("BENCH_BIN", BENCH.parent / "bin"))
WORK = Path(os.environ.get("BENCH_WORK", BENCH / "work"))
RUN = WORK / "run"
PID_FILE = WORK / "pids"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")

# Sizes and repetitions. Full: about 15 minutes on 2 cores; quick: about 3 minutes.
P = dict(
    big_mb=20 if QUICK else 100,
    history=1000 if QUICK else 4000,
    push_commits=200,
    reps_ls=10 if QUICK else 30,
    reps_clone=3 if QUICK else 5,
    reps_push=3 if QUICK else 5,
    keys_calls=100 if QUICK else 500,
    concurrency=(32, 64),
    idle_conns=100,
    burst_ls=100 if QUICK else 1000,
)

USER = "gsbench"          # login user of floor and ours (the "git" user)
GL_USER = "gsbench-gl"    # gitolite's user
SYSTEMS = ("floor", "gitolite", "ours", "sshd", "go-sshd", "ours-real", "go-real")
SSHD_SYSTEMS = ("sshd", "go-sshd")
REPOS = ("history", "big")
PROJECT = "bench/{}"      # repository path as typed after `user@host:`


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*args, check=True, **kw):
    """Runs a command (list), returning CompletedProcess; raises with its output on failure."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n"
                           f"{r.stdout}{r.stderr}")
    return r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} after {timeout}s")


class Procs:
    """Every long-running process this harness starts; stopped by PID, never by name."""

    def __init__(self):
        self.procs = []

    def start(self, name, args, log_path, user=None, **kw):
        out = open(log_path, "wb")
        extra = {}
        if user is not None:
            pw = pwd.getpwnam(user)
            extra = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        p = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL,
                             stdout=kw.pop("stdout", out), stderr=out, **extra, **kw)
        self.procs.append((name, p))
        with open(PID_FILE, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    @staticmethod
    def stop_leftovers():
        """Stops what an earlier, killed run of this harness left running: only PIDs it wrote
        down whose command line still names this work folder."""
        if not PID_FILE.exists():
            return
        for pid in PID_FILE.read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(WORK) in cmdline:
                log(f"stopping leftover process {pid} of an earlier run")
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except OSError:
                    pass
        time.sleep(0.5)
        PID_FILE.unlink()

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        PID_FILE.unlink(missing_ok=True)


PROCS = Procs()
SOCKET_DIRS = []
CREATED_USERS = []


def ensure_user(name, home):
    """A dedicated system user; its password field is '*' (no password, but not "locked", which
    sshd would refuse even for public keys when PAM is off)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        sh("useradd", "--system", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh",
           "--user-group", name)
        CREATED_USERS.append(name)
    sh("usermod", "--home", home, "-p", "*", name)
    home.mkdir(parents=True, exist_ok=True)
    chown(home, name)


def chown(path, user, recursive=False):
    if recursive:
        sh("chown", "-R", f"{user}:{user}", path)
    else:
        shutil.chown(path, user, user)


def remove_leftover_users():
    """Deletes users an earlier, killed run created (recognised by a home inside WORK)."""
    for name in (USER, GL_USER):
        try:
            home = pwd.getpwnam(name).pw_dir
        except KeyError:
            continue
        if home.startswith(str(WORK) + "/"):
            log(f"removing user {name} left by an earlier run")
            sh("userdel", name, check=False)


def remove_users():
    for name in CREATED_USERS:
        sh("userdel", name, check=False)
    CREATED_USERS.clear()


def git_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", LC_ALL="C")
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# sshd


def sshd_config(port, user, auth_lines, name):
    """support/sshd_config.tmpl rendered for `user`; for floor and gitolite the
    AuthorizedKeysCommand lines are replaced by `auth_lines` (everything else stays identical)."""
    d = RUN / name
    text = (TOP / "support" / "sshd_config.tmpl").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    if auth_lines is not None:
        lines = [ln for ln in lines if not ln.lstrip().startswith("AuthorizedKeys")] + auth_lines
    text = "\n".join(lines) + "\n"
    text = (text.replace("@PORT@", str(port)).replace("@HOST_KEY@", str(RUN / "host_ed25519"))
            .replace("@PID_FILE@", str(d / "sshd.pid")).replace("@PERMIT_ROOT_LOGIN@", "no")
            .replace("@USER@", user))
    return text


def start_sshd(name, user, auth_lines=None, shell_root=None):
    d = RUN / name
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    text = sshd_config(port, user, auth_lines, name)
    if shell_root is not None:
        text = text.replace("@ROOT@", str(shell_root))
    (d / "sshd_config").write_text(text)
    sh("/usr/sbin/sshd", "-t", "-f", d / "sshd_config")
    p = PROCS.start(f"sshd-{name}", ["/usr/sbin/sshd", "-D", "-e", "-f", d / "sshd_config"],
                    d / "sshd.log")
    wait_port(port, p, f"sshd ({name})")
    return port


def ssh_command(port):
    return (f"ssh -F /dev/null -i {RUN / 'client_ed25519'} -p {port} -o IdentitiesOnly=yes "
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes "
            "-o LogLevel=ERROR")


class System:
    def __init__(self, name, user, port):
        self.name, self.user, self.port = name, user, port

    def url(self, repo):
        return f"{self.user}@127.0.0.1:{PROJECT.format(repo)}.git"

    def env(self, **extra):
        return git_env(GIT_SSH_COMMAND=ssh_command(self.port), **extra)


# --------------------------------------------------------------------------------------------
# the three systems


def copy_repos(cache, dest, user):
    dest.mkdir(parents=True, exist_ok=True)
    for repo in REPOS:
        sh("cp", "-a", cache / f"{repo}.git", dest / f"{repo}.git")
    chown(dest, user, recursive=True)


FLOOR_SERVE = """#!/bin/sh
# floor: the forced command; nothing but a path mapping between sshd and git.
set -f
cmd=${{SSH_ORIGINAL_COMMAND%% *}}
repo=${{SSH_ORIGINAL_COMMAND#* }}
repo=${{repo#\\'}}
repo=${{repo%\\'}}
case $cmd in
  git-upload-pack|git-receive-pack) exec "$cmd" "{storage}/${{repo#/}}" ;;
esac
echo "floor: unsupported command" >&2
exit 1
"""


def setup_floor(cache, pub):
    d = RUN / "floor"
    storage = d / "repos" / "bench"
    copy_repos(cache, storage, USER)
    serve = d / "serve"
    serve.write_text(FLOOR_SERVE.format(storage=d / "repos"))
    serve.chmod(0o755)
    keys = d / "authorized_keys"
    keys.write_text(f'command="{serve}",no-port-forwarding,no-X11-forwarding,'
                    f"no-agent-forwarding,no-pty {pub}\n")
    keys.chmod(0o644)
    port = start_sshd("floor", USER, [f"AuthorizedKeysFile {keys}"])
    return System("floor", USER, port)


def setup_gitolite(cache, pub):
    if not Path("/usr/share/gitolite3/gitolite-shell").exists():
        raise RuntimeError("gitolite3 is not installed (bench.sh installs it when run as root)")
    home = RUN / "gitolite-home"
    ensure_user(GL_USER, home)
    (home / "bench.pub").write_text(pub + "\n")
    chown(home / "bench.pub", GL_USER)
    as_gl = ["runuser", "-u", GL_USER, "--", "env", f"HOME={home}", "PATH=/usr/bin:/bin"]
    sh(*as_gl, "gitolite", "setup", "-pk", home / "bench.pub", cwd=home)
    conf = home / ".gitolite" / "conf" / "gitolite.conf"
    conf.write_text("repo gitolite-admin\n    RW+ = bench\n\n"
                    "repo bench/history bench/big\n    RW+ = bench\n")
    chown(conf, GL_USER)
    copy_repos(cache, home / "repositories" / "bench", GL_USER)
    sh(*as_gl, "gitolite", "compile", cwd=home)
    sh(*as_gl, "gitolite", "setup", cwd=home)
    port = start_sshd("gitolite", GL_USER, ["AuthorizedKeysFile .ssh/authorized_keys"])
    return System("gitolite", GL_USER, port)


PRODUCT = ("gitlab-shell", "gitlab-shell-authorized-keys-check",
           "gitlab-shell-authorized-principals-check", "gitlab-shell-check")
TIME_WRAPPER = """#!/bin/sh
# Measuring copy only: the real gitlab-shell under /usr/bin/time (peak RSS, CPU), one line per run.
exec /usr/bin/time -a -o {log} -f '%M %U %S %e' {env}{real} "$@"
"""


def wait_first_line(path, proc, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        text = path.read_text() if path.exists() else ""
        if "\n" in text:
            return text.split("\n", 1)[0].strip()
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not print its address after {timeout}s")


def escape_url_path(path):
    return str(path).replace("%", "%25").replace("/", "%2F")


class Ours(System):
    pass


def make_shell_root(root, config, secret, instrumented=False, real=None):
    """A GitLab Shell root (bin/, config.yml, secret) as an operator installs it; sshd-safe
    (root-owned, not group/world-writable). `instrumented`: bin/gitlab-shell is a wrapper that
    runs the real binary (libexec/gitlab-shell, same root) under /usr/bin/time; `real`: another
    gitlab-shell binary to run there instead (the Go anchor), pointed at this root with
    GITLAB_SHELL_DIR."""
    (root / "bin").mkdir(parents=True)
    for b in PRODUCT:
        sh("install", "-m", "755", PRODUCT_BIN / b, root / "bin" / b)
    if instrumented:
        (root / "libexec").mkdir()
        sh("mv", root / "bin" / "gitlab-shell", root / "libexec" / "gitlab-shell")
        measure = root / "measure.log"
        measure.touch()
        chown(measure, USER)
        env = f"env GITLAB_SHELL_DIR={root} " if real else ""
        (root / "bin" / "gitlab-shell").write_text(
            TIME_WRAPPER.format(log=measure, env=env,
                                real=real or root / "libexec" / "gitlab-shell"))
        (root / "bin" / "gitlab-shell").chmod(0o755)
    (root / "config.yml").write_text(config.format(root=root))
    (root / ".gitlab_shell_secret").write_text(secret)
    (root / ".gitlab_shell_secret").chmod(0o600)
    chown(root / ".gitlab_shell_secret", USER)
    (root / "gitlab-shell.log").touch()
    chown(root / "gitlab-shell.log", USER)


def fixture_text(pub):
    return ("# Generated by bench/bench.py (schema: crates/stub-api/src/fixture.rs).\n"
            "users:\n  - { id: 1, username: bench, name: Bench User }\n"
            f"keys:\n  - {{ id: 1, user: bench, title: bench key, key: \"{pub}\" }}\n"
            "projects:\n" + "".join(
                f"  - {{ path: bench/{r}, id: {i + 1}, members: {{ bench: admin }}, "
                "default_branch: main }\n" for i, r in enumerate(REPOS)))


REAL_GITALY_CONFIG = """# Generated by bench/bench.py (see docs/real-gitaly.md).
socket_path = "{sock}/gitaly.sock"
bin_dir = "{bin_dir}"
runtime_dir = "{sock}/rt"

[git]
bin_path = "{git}"
use_bundled_binaries = false

[[storage]]
name = "default"
path = "{storage}"

[logging]
level = "warn"
format = "json"

[gitlab]
url = "{api}"
secret_file = "{secret}"

[gitlab-shell]
dir = "{d}/gitlab-shell"

[hooks]
custom_hooks_dir = "{d}/custom_hooks"

[auth]
token = "{token}"
"""


def wait_socket(path, proc, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_socket():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not create {path} after {timeout}s")


def setup_real(cache, pub, name, go):
    """`ours-real` (go=False) or `go-real` (go=True): sshd with our keys check, the stub API and
    GitLab's Gitaly 16.11.6 (built by support/real-gitaly.sh, cached); the forced command is our
    gitlab-shell, or a wrapper running the Go GitLab Shell 14.35 on the same root."""
    for b in PRODUCT:
        if not (PRODUCT_BIN / b).exists():
            raise RuntimeError(f"{PRODUCT_BIN / b} missing: run `make compile`")
    built = sh(TOP / "support" / "real-gitaly.sh", timeout=3600)
    real_bin = Path(built.stdout.strip().splitlines()[-1])
    go_shell = go_binary("gitlab-shell") if go else None
    if go and go_shell is None:
        raise RuntimeError("the Go GitLab Shell 14.35 is not available (BENCH_GO=0 or no tool)")
    d = RUN / name
    d.mkdir(parents=True)
    sock = Path(sh("mktemp", "-d", "/tmp/gsbench.XXXXXX").stdout.strip())
    SOCKET_DIRS.append(sock)
    sock.chmod(0o755)
    (sock / "rt").mkdir()
    secret = "".join(random.Random(7).choice("0123456789abcdef") for _ in range(64)) + "\n"
    token = "bench-gitaly-token"
    api_url = "http+unix://" + escape_url_path(sock / "api.sock")
    config = ("user: " + USER + "\ngitlab_url: \"" + api_url + "\"\n"
              "log_file: \"{root}/gitlab-shell.log\"\nlog_level: INFO\n")
    root = d / "root"
    make_shell_root(root, config, secret)
    if go_shell is not None:
        (root / "bin" / "gitlab-shell").write_text(
            f"#!/bin/sh\nGITLAB_SHELL_DIR={root} exec {go_shell} \"$@\"\n")
        (root / "bin" / "gitlab-shell").chmod(0o755)
    (d / "fixture.yml").write_text(fixture_text(pub))
    storage = d / "storage"
    copy_repos(cache, storage / "bench", USER)
    for sub in ("gitlab-shell", "custom_hooks"):
        (d / "gitaly" / sub).mkdir(parents=True)
    chown(storage, USER)
    chown(sock, USER, recursive=True)
    chown(d / "gitaly", USER, recursive=True)
    # Gitaly's hooks call the API over TCP; GitLab Shell uses the unix socket.
    api = PROCS.start(f"stub-api-{name}", [
        TOP / "target/release/stub-api", "--fixture", d / "fixture.yml",
        "--unix", sock / "api.sock", "--listen", "127.0.0.1:0",
        "--secret-file", root / ".gitlab_shell_secret",
        "--gitaly-address", f"unix:{sock / 'gitaly.sock'}", "--gitaly-token", token],
        d / "stub-api.log", user=USER, stdout=open(d / "stub-api.out", "wb"))
    wait_first_line(d / "stub-api.out", api, "stub-api")
    api_tcp = next(u for u in (d / "stub-api.out").read_text().split() if u.startswith("http://"))
    cfg = d / "gitaly" / "config.toml"
    cfg.write_text(REAL_GITALY_CONFIG.format(
        sock=sock, bin_dir=real_bin, git=shutil.which("git"), storage=storage, api=api_tcp,
        secret=root / ".gitlab_shell_secret", d=d / "gitaly", token=token))
    gitaly = PROCS.start(f"gitaly-{name}", [real_bin / "gitaly", "serve", cfg],
                         d / "gitaly.log", user=USER)
    wait_socket(sock / "gitaly.sock", gitaly, f"gitaly ({name})")
    port = start_sshd(name, USER, shell_root=root)
    return System(name, USER, port)


def setup_ours(cache, pub):
    for b in PRODUCT:
        if not (PRODUCT_BIN / b).exists():
            raise RuntimeError(f"{PRODUCT_BIN / b} missing: run `make compile`")
    for b in ("stub-api", "dev-gitaly"):
        if not (TOP / "target" / "release" / b).exists():
            raise RuntimeError(f"target/release/{b} missing: run `make compile`")
    d = RUN / "ours"
    d.mkdir(parents=True)
    # unix socket paths must stay short (~108 bytes)
    sock = Path(sh("mktemp", "-d", "/tmp/gsbench.XXXXXX").stdout.strip())
    SOCKET_DIRS.append(sock)
    sock.chmod(0o755)
    chown(sock, USER)
    secret = "".join(random.Random(7).choice("0123456789abcdef") for _ in range(64)) + "\n"
    token = "bench-gitaly-token"
    api_url = "http+unix://" + escape_url_path(sock / "api.sock")
    config = ("user: " + USER + "\ngitlab_url: \"" + api_url + "\"\n"
              "log_file: \"{root}/gitlab-shell.log\"\nlog_level: INFO\n")
    root = d / "root"
    make_shell_root(root, config, secret)
    instr = d / "root-measured"
    make_shell_root(instr, config, secret, instrumented=True)
    (d / "fixture.yml").write_text(fixture_text(pub))
    storage = d / "storage"
    copy_repos(cache, storage / "bench", USER)
    chown(storage, USER)
    api = PROCS.start("stub-api", [
        TOP / "target/release/stub-api", "--fixture", d / "fixture.yml",
        "--unix", sock / "api.sock", "--secret-file", root / ".gitlab_shell_secret",
        "--gitaly-address", f"unix:{sock / 'gitaly.sock'}", "--gitaly-token", token,
        "--quiet"],
        d / "stub-api.log", user=USER, stdout=open(d / "stub-api.out", "wb"))
    wait_first_line(d / "stub-api.out", api, "stub-api")
    gitaly = PROCS.start("dev-gitaly", [
        TOP / "target/release/dev-gitaly", "serve", "--storage", storage,
        "--listen", f"unix:{sock / 'gitaly.sock'}", "--token", token,
        "--gitlab-url", api_url, "--secret-file", root / ".gitlab_shell_secret", "--quiet"],
        d / "dev-gitaly.log", user=USER, stdout=open(d / "dev-gitaly.out", "wb"))
    wait_first_line(d / "dev-gitaly.out", gitaly, "dev-gitaly")
    port = start_sshd("ours", USER, shell_root=root)
    s = Ours("ours", USER, port)
    s.root, s.instr, s.gitaly_pid, s.api_pid = root, instr, gitaly.pid, api.pid
    s.api_url = api_url
    s.blob = pub.split()[1]
    s.measured_port = start_sshd("ours-measured", USER, shell_root=instr)
    # The Go GitLab Shell 14.35 as the forced command (our keys-check prints its lines), same
    # API, Gitaly and repositories: the outside anchor for the process costs during a clone.
    s.go_instr = s.go_port = None
    go = go_binary("gitlab-shell")
    if go is not None:
        s.go_instr = d / "root-go-measured"
        make_shell_root(s.go_instr, config, secret, instrumented=True, real=go)
        s.go_port = start_sshd("go-measured", USER, shell_root=s.go_instr)
    return s


GITLAB_SSHD_CONFIG = """# Generated by bench/bench.py: gitlab-sshd with ours's API and Gitaly.
user: {user}
gitlab_url: "{api}"
log_file: "{root}/gitlab-sshd.log"
log_level: INFO
sshd:
  listen: "127.0.0.1:{port}"
  web_listen: ""
  host_key_files: ["{root}/ssh_host_ed25519_key"]
"""


def setup_sshd(ours, name):
    """`sshd` (our gitlab-sshd) or `go-sshd` (the Go gitlab-sshd 14.35): the server runs as the
    git user on its own port with the same host key, stub API, dev Gitaly and repositories as
    `ours` (so every difference is the SSH front door), all settings at their defaults."""
    if ours is None:
        raise RuntimeError(f"{name} shares ours's API and Gitaly: include ours in BENCH_SYSTEMS")
    if name == "go-sshd":
        binary = go_binary("gitlab-sshd")
        if binary is None:
            raise RuntimeError("the Go gitlab-sshd 14.35 is not available (BENCH_GO=0 or no tool)")
    else:
        binary = PRODUCT_BIN / "gitlab-sshd"
        if not binary.exists():
            raise RuntimeError(f"{binary} missing: run `make compile`")
    root = RUN / name / "root"
    root.mkdir(parents=True)
    port = free_port()
    (root / "config.yml").write_text(GITLAB_SSHD_CONFIG.format(
        user=USER, api=ours.api_url, root=root, port=port))
    shutil.copy(ours.root / ".gitlab_shell_secret", root / ".gitlab_shell_secret")
    shutil.copy(RUN / "host_ed25519", root / "ssh_host_ed25519_key")
    (root / "gitlab-sshd.log").touch()
    chown(root, USER, recursive=True)
    # The Go build finds config.yml (and the secret) through GITLAB_SHELL_DIR; ours reads
    # -config-dir. Both get both.
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", "GITLAB_SHELL_DIR": str(root)}
    # BENCH_SSHD_WRAP (e.g. `heaptrack -o /tmp/sshd`) runs our gitlab-sshd under a profiler;
    # its memory figures are then the profiler's.
    wrap = os.environ.get("BENCH_SSHD_WRAP", "").split() if name == "sshd" else []
    # Both servers map their binary as read back from disk (see evict_executables).
    evict_executables([binary.parent], deep=[])
    p = PROCS.start(name, wrap + [binary, "-config-dir", root], RUN / name / "stderr.log",
                    user=USER, env=env, cwd=root)
    wait_port(port, p, name)
    s = System(name, USER, port)
    s.pid = p.pid
    return s


# --------------------------------------------------------------------------------------------
# measuring


TIMEOUT = 300  # seconds; no single git command of the benchmark may take longer


def run_measured(args, env, cwd=None, timeout=TIMEOUT):
    """Runs args to completion (killing its process group after `timeout` s); returns
    (wall seconds, rusage of the child, exit code, stderr)."""
    err = open(RUN / "last-stderr", "w+b")
    t0 = time.perf_counter()
    p = subprocess.Popen([str(a) for a in args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    timer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    msg = err.read().decode(errors="replace").strip()
    if wall >= timeout:
        msg = f"killed after {timeout}s (hung). {msg}"
    return wall, ru, p.returncode, msg


class Failed(RuntimeError):
    pass


FAILED = {}   # figure -> {system: message}


def guarded(key, s, fn):
    """Runs one measurement; a failure is recorded for (figure, system) and that system skips
    the rest of the figure, so one broken system never loses the other figures."""
    if s.name in FAILED.get(key, {}):
        return None
    try:
        return fn()
    except Failed as e:
        log(f"FAILED {key} via {s.name}: {e}")
        FAILED.setdefault(key, {})[s.name] = str(e).splitlines()[0][:160] if str(e) else "?"
        return None


def pack_bytes(repo_dir):
    return sum(f.stat().st_size for f in (repo_dir / "objects" / "pack").glob("*.pack"))


class Stats:
    def __init__(self, values):
        self.values = list(values)

    @property
    def med(self):
        return statistics.median(self.values)

    def fmt(self, scale=1.0, digits=2, unit=""):
        if not self.values:
            return "n/a"
        v = [x * scale for x in self.values]
        return (f"{statistics.median(v):.{digits}f}{unit} "
                f"({min(v):.{digits}f}–{max(v):.{digits}f})")


RESULTS = {}   # key -> {system: Stats}
EXTRA = {}     # free-form results


def record(key, system, value):
    RESULTS.setdefault(key, {}).setdefault(system, Stats([])).values.append(value)


def rotations(systems, reps):
    """Interleave the systems and rotate their order each repetition (no ordering bias)."""
    for i in range(reps):
        k = i % len(systems)
        yield i, systems[k:] + systems[:k]


def ls_remote_once(s):
    wall, _, rc, err = run_measured(["git", "ls-remote", s.url("history")], s.env())
    if rc != 0:
        raise Failed(f"ls-remote exited {rc}: {err}")
    return wall


def bench_ls_remote(systems):
    log(f"ls-remote x{P['reps_ls']}")
    for s in systems:   # warm-up (and a functional check)
        guarded("ls-remote", s, lambda: ls_remote_once(s))
    for _, order in rotations(systems, P["reps_ls"]):
        for s in order:
            wall = guarded("ls-remote", s, lambda: ls_remote_once(s))
            if wall is not None:
                record("ls-remote", s.name, wall)


def protocol_check(systems):
    """Proves that protocol v2 is negotiated through each system (AcceptEnv GIT_PROTOCOL)."""
    for s in systems:
        r = subprocess.run(["git", "-c", "protocol.version=2", "ls-remote", s.url("history")],
                           env=s.env(GIT_TRACE_PACKET="1"), capture_output=True, text=True)
        EXTRA.setdefault("v2", {})[s.name] = "version 2" in r.stderr


def clone_once(s, repo, proto, dest):
    shutil.rmtree(dest, ignore_errors=True)
    wall, _, rc, err = run_measured(
        ["git", "-c", f"protocol.version={proto}", "clone", "-q", "--bare", s.url(repo), dest],
        s.env())
    if rc != 0:
        shutil.rmtree(dest, ignore_errors=True)
        raise Failed(f"clone exited {rc}: {err}")
    size = pack_bytes(dest)
    shutil.rmtree(dest, ignore_errors=True)
    return wall, size


def bench_clones(systems):
    dest = RUN / "clone-dest"
    for repo in REPOS:
        for proto in (2, 0):
            key = f"clone {repo} v{proto}"
            log(f"{key} x{P['reps_clone']}")
            for s in systems:   # warm-up
                guarded(key, s, lambda: clone_once(s, repo, proto, dest))
            for _, order in rotations(systems, P["reps_clone"]):
                for s in order:
                    got = guarded(key, s, lambda: clone_once(s, repo, proto, dest))
                    if got is None:
                        continue
                    wall, size = got
                    record(key, s.name, wall)
                    record(key + " MB/s", s.name, size / wall / 1e6)
                    EXTRA[f"pack {repo}"] = size


def bench_push(systems):
    log(f"push of {P['push_commits']} commits x{P['reps_push']}")
    client = RUN / "client.git"
    def push_once(s, i):
        wall, _, rc, err = run_measured(
            ["git", "-C", client, "push", "-q", s.url("history"),
             f"refs/heads/push-{i}:refs/heads/push-{i}"], s.env())
        if rc != 0:
            raise Failed(f"push exited {rc}: {err}")
        return wall

    for i, order in rotations(systems, P["reps_push"]):
        for s in order:
            wall = guarded("push", s, lambda: push_once(s, i))
            if wall is not None:
                record("push", s.name, wall)


class MemSampler(threading.Thread):
    """Peaks, sampled every 100 ms, of (a) MemTotal - MemAvailable above its value at the start
    (system-wide: includes the clients and anything else running) and (b) the sum of RSS of the
    processes of the serving user (sshd session children, forced command, git, dev Gitaly, stub
    API: the server side)."""

    def __init__(self, user):
        super().__init__(daemon=True)
        self.uid = pwd.getpwnam(user).pw_uid
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.stop_flag = threading.Event()
        self.base = self.used()
        self.peak = self.base
        self.peak_user = self.user_rss()

    @staticmethod
    def used():
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0])
        return (info["MemTotal"] - info["MemAvailable"]) * 1024

    def user_rss(self):
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.stat(f"/proc/{pid}").st_uid != self.uid:
                    continue
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * self.page
            except (OSError, ValueError, IndexError):
                continue
        return total

    def run(self):
        while not self.stop_flag.wait(0.1):
            self.peak = max(self.peak, self.used())
            self.peak_user = max(self.peak_user, self.user_rss())

    def finish(self):
        self.stop_flag.set()
        self.join()
        return self.peak - self.base, self.peak_user


def bench_concurrency(systems):
    for k, n in enumerate(P["concurrency"]):
        for s in (systems if k % 2 == 0 else systems[::-1]):
            log(f"{n} concurrent clones via {s.name}")
            dests = [RUN / f"conc-{i}" for i in range(n)]
            for d in dests:
                shutil.rmtree(d, ignore_errors=True)
            pid = getattr(s, "pid", None)
            if pid is not None:
                reset_hwm(pid)
            sampler = MemSampler(s.user)
            sampler.start()
            t0 = time.perf_counter()
            procs = [subprocess.Popen(["git", "clone", "-q", "--bare", s.url("history"), d],
                                      env=s.env(), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                     for d in dests]
            failures, errors = 0, []
            for p, d in zip(procs, dests):
                try:
                    _, err = p.communicate(timeout=300)
                except subprocess.TimeoutExpired:
                    p.kill()
                    _, err = p.communicate()
                if p.returncode != 0 or pack_bytes(d) == 0:
                    failures += 1
                    errors.append(err.decode(errors="replace").strip())
            wall = time.perf_counter() - t0
            peak, peak_user = sampler.finish()
            server_peak = proc_hwm(pid) * 1024 if pid is not None else None
            for d in dests:
                shutil.rmtree(d, ignore_errors=True)
            EXTRA.setdefault("concurrency", []).append(
                dict(n=n, system=s.name, failures=failures, wall=wall, peak=peak, peak_user=peak_user,
                     server_peak=server_peak, errors=errors[:3]))


def proc_mem(pid):
    """(RSS, PSS, anonymous, threads) of a process in bytes (threads: a count), from
    /proc/<pid>/smaps_rollup and status."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("Rss", "Pss", "Anonymous"):
            out[k] = int(v.split()[0]) * 1024
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return out.get("Rss", 0), out.get("Pss", 0), out.get("Anonymous", 0), threads


def settle():
    """Lets a server's background work (reaping idle threads, Go's GC) run before a reading."""
    time.sleep(3 if QUICK else 12)


def bench_sshd_memory(systems):
    """Memory of each gitlab-sshd process: at rest (after the protocol check's session, before
    the other figures) and with 100 idle authenticated connections (`ssh -N`; each connection signals its login by
    running a LocalCommand), the difference per connection."""
    n = P["idle_conns"]
    for s in systems:
        log(f"memory at rest and with {n} idle connections via {s.name}")
        settle()
        rest = proc_mem(s.pid)
        marks = RUN / f"idle-{s.name}"
        marks.mkdir()
        clients = []
        try:
            for i in range(n):
                cmd = (ssh_command(s.port).split() +
                       ["-N", "-o", "PermitLocalCommand=yes", "-o",
                        f"LocalCommand=touch {marks / str(i)}", f"{s.user}@127.0.0.1"])
                clients.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 120
            while len(list(marks.iterdir())) < n and time.monotonic() < deadline:
                time.sleep(0.2)
            logged_in = len(list(marks.iterdir()))
            settle()
            idle = proc_mem(s.pid)
        finally:
            for c in clients:
                c.terminate()
            for c in clients:
                try:
                    c.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    c.kill()
                    c.wait()
        EXTRA.setdefault("sshd-memory", {})[s.name] = dict(
            rest=rest, idle=idle, logged_in=logged_in, n=n)


def bench_burst(systems):
    """`git ls-remote` sessions started all at once through each gitlab-sshd: failures
    (must be 0), total wall, the server's peak RSS."""
    n = P["burst_ls"]
    for s in systems:
        log(f"{n} concurrent ls-remote via {s.name}")
        errs = RUN / f"burst-{s.name}"
        errs.mkdir()
        reset_hwm(s.pid)
        t0 = time.perf_counter()
        procs = []
        for i in range(n):
            with open(errs / str(i), "wb") as err:
                procs.append(subprocess.Popen(["git", "ls-remote", s.url("history")],
                                              env=s.env(), stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=err))
        failures, errors = 0, []
        for i, p in enumerate(procs):
            try:
                p.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.returncode != 0:
                failures += 1
                errors.append((errs / str(i)).read_text(errors="replace").strip())
        wall = time.perf_counter() - t0
        EXTRA.setdefault("burst", {})[s.name] = dict(
            n=n, failures=failures, wall=wall, peak=proc_hwm(s.pid) * 1024,
            errors=sorted(set(errors))[:3])


TRUE = "/bin/true"


def keys_check_runs(binary, root, blob, calls, env_root=False):
    """`calls` sequential runs of a keys-check binary as sshd runs it. Pass 1 times each call
    (s); pass 2 runs each call under /usr/bin/time for its peak RSS (KiB). (wait4's ru_maxrss of
    a child started from Python would include Python's own pages from before exec.)"""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
    if env_root:
        env["GITLAB_SHELL_DIR"] = str(root)
    args = [str(binary), USER, USER, blob]
    walls, rss = [], []
    out_path, time_path = RUN / "keys-check.out", RUN / "keys-check.time"
    for i in range(2 * calls + 6):
        timed = i >= calls + 3
        cmd = (["/usr/bin/time", "-o", str(time_path), "-f", "%M"] if timed else []) + args
        with open(out_path, "w+b") as out:
            # A blocking wait4 (a timer kills a hung call): subprocess.run(timeout=...) polls
            # with a doubling sleep (0.5 ms, 1 ms, 2 ms, ...), which rounds every wall time up
            # to the next poll (1.5, 3.5, 7.5 ms) and hides the differences being measured.
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.DEVNULL)
            timer = threading.Timer(60, p.kill)
            timer.start()
            try:
                _, status, _ = os.wait4(p.pid, 0)
            finally:
                timer.cancel()
            wall = time.perf_counter() - t0
            p.returncode = rc = os.waitstatus_to_exitcode(status)
            out.seek(0)
            line = out.read().decode(errors="replace")
        if rc != 0 or not (line.startswith("command=") or binary == TRUE):
            raise Failed(f"{binary} exited {rc} and printed {line!r}")
        if 3 <= i < calls + 3:     # the first calls only warm the page cache
            walls.append(wall)
        elif i >= calls + 6:
            rss.append(int(time_path.read_text().split()[-1]))
    return Stats(walls), Stats(rss)


def evict_executables(dirs, deep):
    """Drops the page cache of every executable in `dirs` (below them for those in `deep`;
    posix_fadvise DONTNEED), so all systems start from pages read back from disk. A binary just written (built, installed or
    copied, as every setup here does) sits in the page cache in large folios, and mapping it
    then counts whole folios: the same `gitlab-shell-authorized-keys-check` measured 5.9 MB
    peak RSS as a fresh copy and 4.9 MB once evicted (2026-12-02, Linux 6.18)."""
    os.sync()
    for top in dirs:
        top = Path(top)
        files = (top.rglob("*") if top in deep else top.glob("*")) if top.is_dir() else []
        for f in files:
            try:
                if not f.is_file() or f.is_symlink() or not os.access(f, os.X_OK):
                    continue
                fd = os.open(f, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def go_binary(name):
    """A binary of the Go GitLab Shell 14.35 (outside anchor), fetched by the shared tool; or
    None (BENCH_GO=0, no tool, no network)."""
    tool = Path("/work/shared/tools/get-go-gitlab-shell.sh")
    if os.environ.get("BENCH_GO", "1") == "0" or not tool.exists():
        return None
    r = sh(tool, check=False, timeout=300)
    binary = Path(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "/nonexistent")
    binary = binary / name
    return binary if r.returncode == 0 and binary.exists() else None


def bench_keys_check(ours):
    n = P["keys_calls"]
    rows = []
    log(f"keys-check x{n}")
    wall, rss = keys_check_runs(ours.root / "bin" / "gitlab-shell-authorized-keys-check",
                                ours.root, ours.blob, n)
    rows.append(("ours (Rust)", wall, rss))
    go = go_binary("gitlab-shell-authorized-keys-check")
    if go is not None:
        # same config.yml and secret as ours; GITLAB_SHELL_DIR points the Go binary at it
        go_root = RUN / "go-root"
        go_root.mkdir()
        for f in ("config.yml", ".gitlab_shell_secret"):
            shutil.copy(ours.root / f, go_root / f)
        text = (go_root / "config.yml").read_text().replace(str(ours.root), str(go_root))
        (go_root / "config.yml").write_text(text)
        wall, rss = keys_check_runs(go, go_root, ours.blob, n, env_root=True)
        rows.append(("Go GitLab Shell 14.35 (anchor)", wall, rss))
    wall, rss = keys_check_runs(TRUE, ours.root, ours.blob, n)
    rows.append(("/bin/true (the harness's own spawn + wait cost, for reference)", wall, rss))
    RESULTS["keys-check"] = {"ours": rows[0][1]}
    RESULTS["keys-check rss"] = {"ours": rows[0][2]}
    out = [f"`gitlab-shell-authorized-keys-check` alone, {n} sequential calls against the stub "
           "API (unix socket), as sshd runs it:", "",
           "| binary | wall per call, ms | peak RSS, MB |", "|---|---|---|"]
    for name, wall, rss in rows:
        out.append(f"| {name} | {wall.fmt(1000, 2)} | {rss.fmt(1 / 1024, 2)} |")
    EXTRA.setdefault("sections", []).append(out)


def proc_cpu(pid):
    """(own utime+stime, waited-for children's utime+stime) of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return ((int(fields[11]) + int(fields[12])) / tick,
            (int(fields[13]) + int(fields[14])) / tick)


def proc_hwm(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def reset_hwm(pid):
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def bench_process_costs(ours):
    """Peak RSS and CPU of the gitlab-shell process (under /usr/bin/time, through a second sshd
    whose GitLab Shell root has the wrapper) and of the dev Gitaly (from /proc) during clones."""
    measured = System("ours", USER, ours.measured_port)
    dest = RUN / "clone-dest"
    log_path = ours.instr / "measure.log"
    out = ["Process costs during one clone (v2) via ours, median (min–max) of "
           f"{P['reps_clone']} clones:", "",
           "| repository | gitlab-shell peak RSS, MB | gitlab-shell CPU (user+sys), s | "
           "clone wall, s | dev-gitaly peak RSS, MB | dev-gitaly CPU, s | git under "
           "dev-gitaly CPU, s |", "|---|---|---|---|---|---|---|"]
    go_rows = []
    for repo in REPOS:
        if ours.go_port is not None:
            go_rows.append((repo, *shell_costs(System("go", USER, ours.go_port), repo, dest,
                                               ours.go_instr / "measure.log")))
        rss, cpu, walls, g_rss, g_cpu, g_child = ([] for _ in range(6))
        clone_once(measured, repo, 2, dest)  # warm-up
        for _ in range(P["reps_clone"]):
            log_path.write_text("")
            reset_hwm(ours.gitaly_pid)
            own0, child0 = proc_cpu(ours.gitaly_pid)
            wall, _ = clone_once(measured, repo, 2, dest)
            own1, child1 = proc_cpu(ours.gitaly_pid)
            g_rss.append(proc_hwm(ours.gitaly_pid))
            g_cpu.append(own1 - own0)
            g_child.append(child1 - child0)
            m_kb, cpu_s = time_line(log_path)
            rss.append(m_kb)
            cpu.append(cpu_s)
            walls.append(wall)
        key = f"gitlab-shell rss {repo}"
        RESULTS[key] = {"ours": Stats(rss)}
        out.append(f"| {repo} | {Stats(rss).fmt(1 / 1024, 2)} | {Stats(cpu).fmt(1, 2)} | "
                   f"{Stats(walls).fmt(1, 2)} | {Stats(g_rss).fmt(1 / 1024, 1)} | "
                   f"{Stats(g_cpu).fmt(1, 2)} | {Stats(g_child).fmt(1, 2)} |")
    if go_rows:
        out += ["", "The same clones with the Go GitLab Shell 14.35 `gitlab-shell` as the forced "
                "command (same sshd, keys-check, stub API and dev Gitaly; outside anchor):", "",
                "| repository | Go gitlab-shell peak RSS, MB | Go gitlab-shell CPU, s | "
                "clone wall, s | ours/Go peak RSS |", "|---|---|---|---|---|"]
        for repo, rss, cpu, walls in go_rows:
            RESULTS[f"go gitlab-shell rss {repo}"] = {"go": Stats(rss)}
            mine = RESULTS[f"gitlab-shell rss {repo}"]["ours"].med
            out.append(f"| {repo} | {Stats(rss).fmt(1 / 1024, 2)} | {Stats(cpu).fmt(1, 2)} | "
                       f"{Stats(walls).fmt(1, 2)} | {mine / Stats(rss).med:.2f}× |")
    EXTRA.setdefault("sections", []).append(out)


def shell_costs(system, repo, dest, log_path):
    """(peak RSS KiB, CPU s, clone wall s) lists of the forced command over repeated clones."""
    rss, cpu, walls = [], [], []
    clone_once(system, repo, 2, dest)  # warm-up
    for _ in range(P["reps_clone"]):
        log_path.write_text("")
        wall, _ = clone_once(system, repo, 2, dest)
        m_kb, cpu_s = time_line(log_path)
        rss.append(m_kb)
        cpu.append(cpu_s)
        walls.append(wall)
    return rss, cpu, walls


def time_line(log_path):
    """(peak RSS KiB, user+sys CPU s) from the one line TIME_WRAPPER wrote for one run."""
    lines = [ln.split() for ln in log_path.read_text().splitlines() if ln.strip()]
    if len(lines) != 1:
        raise RuntimeError(f"expected one /usr/bin/time line, got {lines}")
    m_kb, user, system, _ = lines[0][-4:]
    return int(m_kb), float(user) + float(system)


# --------------------------------------------------------------------------------------------
# report


def machine_info():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    return dict(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        nproc=os.cpu_count(), cpu=cpu, mem=f"{mem} MiB", kernel=platform.release(),
        git=sh("git", "--version").stdout.strip(),
        ssh=sh("ssh", "-V").stderr.strip(),
        mode="quick (BENCH_QUICK=1)" if QUICK else "full",
    )


def ratio(key, system):
    r = RESULTS.get(key, {})
    if system not in r or "floor" not in r:
        return "n/a"
    return f"{r[system].med / r['floor'].med:.2f}×"


def targets():
    """The issue's targets (to reach, not asserted) with the measured value and a verdict."""
    def med(key, system="ours"):
        r = RESULTS.get(key, {})
        return r[system].med if system in r else None

    def mx(key, system="ours"):
        r = RESULTS.get(key, {})
        return max(r[system].values) if system in r and r[system].values else None

    rows = []

    def row(what, value, ok):
        verdict = "n/a" if ok is None else ("met" if ok else "**missed**")
        rows.append(f"| {what} | {value} | {verdict} |")

    for repo in REPOS:
        for proto in (2, 0):
            key = f"clone {repo} v{proto}"
            o, f = med(key), med(key, "floor")
            row(f"{key} ≤ 1.10× floor", f"{o / f:.2f}×" if o and f else "n/a",
                o / f <= 1.10 if o and f else None)
    o, f, g = med("ls-remote"), med("ls-remote", "floor"), med("ls-remote", "gitolite")
    row("ls-remote ≤ 1.3× floor", f"{o / f:.2f}×" if o and f else "n/a",
        o / f <= 1.3 if o and f else None)
    row("ls-remote faster than gitolite3",
        f"{o * 1000:.1f} ms vs {g * 1000:.1f} ms" if o and g else "n/a",
        o < g if o and g else None)
    for repo in REPOS:
        v = mx(f"gitlab-shell rss {repo}")
        row(f"gitlab-shell peak RSS during a {repo} clone ≤ 6 MB (max of runs)",
            f"{v / 1024:.2f} MB" if v else "n/a", v / 1024 <= 6 if v else None)
    v = med("keys-check")
    row("keys-check ≤ 3 ms (median)", f"{v * 1000:.2f} ms" if v else "n/a",
        v <= 0.003 if v else None)
    v = mx("keys-check rss")
    row("keys-check ≤ 5 MB peak RSS (max)", f"{v / 1024:.2f} MB" if v else "n/a",
        v / 1024 <= 5 if v else None)
    conc = [c for c in EXTRA.get("concurrency", []) if c["system"] == "ours"]
    if conc:
        fails = sum(c["failures"] for c in conc)
        row("concurrent clones (" + ", ".join(str(c["n"]) for c in conc) + "): 0 failures",
            str(fails), fails == 0)
    return ["Targets (ours; to reach, not asserted):", "", "| target | measured | |",
            "|---|---|---|"] + rows + [""]


def sshd_section():
    """The gitlab-sshd figures (ours against Go 14.35) and the issue's targets for them."""
    mem, burst = EXTRA.get("sshd-memory", {}), EXTRA.get("burst", {})
    conc = {(c["system"], c["n"]): c for c in EXTRA.get("concurrency", [])}
    names = [n for n in SSHD_SYSTEMS if n in mem or n in burst
             or any(k[0] == n for k in conc)]
    if not names:
        return []

    def cell(v, scale, digits, unit=""):
        return "n/a" if v is None else f"{v * scale:.{digits}f}{unit}"

    rows = []   # (label, {system: value}, scale, digits)

    def mem_row(label, when, idx):
        rows.append((label, {n: mem[n][when][idx] for n in names if n in mem}, 1e-6, 2))

    mem_row("RSS at rest, MB", "rest", 0)
    mem_row("PSS at rest, MB", "rest", 1)
    mem_row("anonymous memory at rest, MB", "rest", 2)
    rows.append(("threads at rest", {n: mem[n]["rest"][3] for n in names if n in mem}, 1, 0))
    n_idle = P["idle_conns"]
    mem_row(f"RSS with {n_idle} idle authenticated connections, MB", "idle", 0)
    mem_row(f"PSS with {n_idle} idle authenticated connections, MB", "idle", 1)
    rows.append((f"threads with {n_idle} idle connections",
                 {n: mem[n]["idle"][3] for n in names if n in mem}, 1, 0))
    per_conn = {n: (mem[n]["idle"][0] - mem[n]["rest"][0]) / max(mem[n]["logged_in"], 1)
                for n in names if n in mem}
    rows.append(("RSS per idle connection, KB", per_conn, 1 / 1024, 1))
    per_conn_pss = {n: (mem[n]["idle"][1] - mem[n]["rest"][1]) / max(mem[n]["logged_in"], 1)
                    for n in names if n in mem}
    rows.append(("PSS per idle connection, KB", per_conn_pss, 1 / 1024, 1))
    rows.append(("RSS after every figure (what the load left behind), MB",
                 {n: mem[n]["after"][0] for n in names if "after" in mem.get(n, {})}, 1e-6, 2))
    for k in P["concurrency"]:
        rows.append((f"peak RSS during {k} concurrent clones, MB",
                     {n: conc[(n, k)]["server_peak"] for n in names if (n, k) in conc}, 1e-6, 1))
    nb = P["burst_ls"]
    rows.append((f"{nb} concurrent ls-remote: failures",
                 {n: burst[n]["failures"] for n in names if n in burst}, 1, 0))
    rows.append((f"{nb} concurrent ls-remote: total wall, s",
                 {n: burst[n]["wall"] for n in names if n in burst}, 1, 2))
    rows.append((f"{nb} concurrent ls-remote: peak RSS, MB",
                 {n: burst[n]["peak"] for n in names if n in burst}, 1e-6, 1))
    out = ["gitlab-sshd, the server process itself (`/proc/<pid>/smaps_rollup`; at rest = after "
           "one session and a pause, before the other figures; idle connections = `ssh -N` "
           "that logged in):", "",
           "| figure | " + " | ".join(names) + " | sshd/go-sshd |",
           "|---|" + "---|" * (len(names) + 1)]
    for label, vals, scale, digits in rows:
        r = (f"{vals['sshd'] / vals['go-sshd']:.2f}×"
             if vals.get("sshd") is not None and vals.get("go-sshd") else "")
        out.append(f"| {label} | " + " | ".join(cell(vals.get(n), scale, digits)
                                                 for n in names) + f" | {r} |")
    for n in names:
        if n in mem and mem[n]["logged_in"] != mem[n]["n"]:
            out.append(f"- {n}: only {mem[n]['logged_in']} of {mem[n]['n']} idle connections "
                       "logged in")
        for e in burst.get(n, {}).get("errors", []):
            out.append(f"- {n} burst error: `{e[:200]}`")
    out.append("")

    # Targets of the issue (gitlab-sshd against Go 14.35 and the floor).
    def med(key, system):
        r = RESULTS.get(key, {})
        return r[system].med if system in r else None

    t = []

    def row(what, value, ok):
        verdict = "n/a" if ok is None else ("met" if ok else "**missed**")
        t.append(f"| {what} | {value} | {verdict} |")

    def vs(a, b, limit, what):
        if a is None or not b:
            row(what, "n/a", None)
        else:
            row(what, f"{a / b:.2f}×", a / b <= limit)

    vs(med("ls-remote", "sshd"), med("ls-remote", "go-sshd"), 0.8, "ls-remote ≤ 0.8× Go gitlab-sshd")
    for proto in (2, 0):
        key = f"clone big v{proto}"
        vs(med(key, "sshd"), med(key, "go-sshd"), 0.9, f"{key} ≤ 0.9× Go gitlab-sshd")
        vs(med(key, "sshd"), med(key, "floor"), 0.95, f"{key} ≤ 0.95× floor")
    if "sshd" in mem and "go-sshd" in mem:
        vs(mem["sshd"]["rest"][0], mem["go-sshd"]["rest"][0], 0.3, "RSS at rest ≤ 0.3× Go")
        vs(mem["sshd"]["idle"][0], mem["go-sshd"]["idle"][0], 0.3,
           f"RSS with {n_idle} idle connections ≤ 0.3× Go")
    if "sshd" in per_conn:
        v = per_conn["sshd"] / 1024
        row("≤ 32 KB per idle connection", f"{v:.1f} KB", v <= 32)
    k = max(P["concurrency"])
    a, b = conc.get(("sshd", k)), conc.get(("go-sshd", k))
    vs(a and a["server_peak"], b and b["server_peak"], 0.5,
       f"peak RSS during {k} concurrent clones ≤ 0.5× Go")
    if "sshd" in burst:
        f = burst["sshd"]["failures"]
        row(f"{nb} concurrent ls-remote: 0 failures", str(f), f == 0)
    return out + ["Targets (gitlab-sshd; to reach, not asserted):", "", "| target | measured | |",
                  "|---|---|---|"] + t + [""]


def report(systems):
    names = [s.name for s in systems]
    m = machine_info()
    out = ["# Benchmark results", "",
           f"- date: {m['date']}; mode: {m['mode']}",
           f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem']} RAM, Linux {m['kernel']}",
           f"- {m['git']}; {m['ssh']}",
           f"- load average (1 min) at the start / end of the measurements: "
           f"{EXTRA.get('load0', 0):.2f} / {EXTRA.get('load1', 0):.2f} (more than nproc means "
           "other work competed for the CPUs: compare ratios, not absolute times)",
           f"- repositories: big = {P['big_mb']} MB of random blobs "
           f"(pack {EXTRA.get('pack big', 0) / 1e6:.1f} MB), history = {P['history']} commits "
           f"(pack {EXTRA.get('pack history', 0) / 1e6:.1f} MB); push = {P['push_commits']} "
           "new commits on a new branch",
           "- cells: median (min–max) over the repetitions; ratios are medians against the "
           "floor measured in the same run, systems interleaved",
           ""]
    if "v2" in EXTRA:
        out.append("- protocol v2 negotiated: " + ", ".join(
            f"{k} {'yes' if v else 'NO'}" for k, v in EXTRA["v2"].items()))
        out.append("")
    head = "| figure | " + " | ".join(names) + " | " + " | ".join(
        f"{n}/floor" for n in names if n != "floor") + " |"
    out += [head, "|" + "---|" * (1 + len(names) + len(names) - 1)]
    rows = [("ls-remote", f"git ls-remote (v2), ms, n={P['reps_ls']}", 1000, 1)]
    for repo in REPOS:
        for proto in (2, 0):
            rows.append((f"clone {repo} v{proto}",
                         f"clone --bare {repo} v{proto}, s, n={P['reps_clone']}", 1, 2))
            rows.append((f"clone {repo} v{proto} MB/s", f"  ↳ throughput, MB/s", 1, 1))
    rows.append(("push", f"push {P['push_commits']} commits, s, n={P['reps_push']}", 1, 2))
    for key, label, scale, digits in rows:
        r = RESULTS.get(key, {})
        failed = FAILED.get(key.replace(" MB/s", ""), {})
        cells = ["FAILED" if n in failed else r[n].fmt(scale, digits) if n in r else "n/a"
                 for n in names]
        ratios = [ratio(key, n) for n in names if n != "floor"]
        out.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    out.append("")
    for key, by_system in FAILED.items():
        for system, msg in by_system.items():
            out.append(f"- FAILED {key} via {system}: `{msg}`")
    if FAILED:
        out.append("")
    if EXTRA.get("concurrency"):
        out += ["Concurrent clones of `history` (v2):", "",
                "| clones | system | failures | total wall, s | peak RSS sum of the serving "
                "user's processes, MB | peak memory used, system-wide, MB |",
                "|---|---|---|---|---|---|"]
        for c in sorted(EXTRA["concurrency"], key=lambda c: (c["n"], names.index(c["system"]))):
            out.append(f"| {c['n']} | {c['system']} | {c['failures']} | {c['wall']:.2f} | "
                       f"{c['peak_user'] / 1e6:.0f} | {c['peak'] / 1e6:.0f} |")
        for c in EXTRA["concurrency"]:
            for e in c["errors"]:
                out.append(f"- {c['system']} x{c['n']} error: `{e[:200]}`")
        out.append("")
    out += targets()
    out += sshd_section()
    for section in EXTRA.get("sections", []):
        out += section + [""]
    text = "\n".join(out)
    return text


# --------------------------------------------------------------------------------------------


def prepare_cache():
    key = f"big{P['big_mb']}-hist{P['history']}-push{P['reps_push']}x{P['push_commits']}"
    cache = WORK / "cache" / key
    if not (cache / "client.git").is_dir():
        log(f"generating repositories in {cache} (once; cached)")
    sh(sys.executable, BENCH / "gen_repos.py", cache, P["big_mb"], P["history"],
       P["reps_push"], P["push_commits"])
    return cache


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it creates system users and starts sshd)")
    # 1,000 concurrent sessions need more than 1,024 descriptors (here and in the servers,
    # which inherit the limit).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    only = os.environ.get("BENCH_SYSTEMS", ",".join(SYSTEMS)).split(",")
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o755)
    Procs.stop_leftovers()
    remove_leftover_users()
    cache = prepare_cache()
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-host", "-f",
       RUN / "host_ed25519")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-client", "-f",
       RUN / "client_ed25519")
    pub = (RUN / "client_ed25519.pub").read_text().strip()
    sh("cp", "-a", cache / "client.git", RUN / "client.git")
    ensure_user(USER, RUN / "home")
    systems = []
    setups = {"floor": setup_floor, "gitolite": setup_gitolite, "ours": setup_ours,
              "ours-real": lambda c, p: setup_real(c, p, "ours-real", go=False),
              "go-real": lambda c, p: setup_real(c, p, "go-real", go=True)}
    for name in SYSTEMS:
        if name in only:
            log(f"setting up {name}")
            if name in SSHD_SYSTEMS:
                ours = next((s for s in systems if s.name == "ours"), None)
                try:
                    systems.append(setup_sshd(ours, name))
                except RuntimeError as e:
                    if name != "go-sshd":
                        raise
                    # The anchor is optional (BENCH_GO=0, no network): the rest still runs.
                    log(f"skipping go-sshd: {e}")
            else:
                systems.append(setups[name](cache, pub))
    evict_executables([RUN, PRODUCT_BIN, BENCH.parent / "target" / "release"]
                      + [b.parent for b in [go_binary("gitlab-shell")] if b], deep=[RUN])
    t0 = time.monotonic()
    EXTRA["load0"] = os.getloadavg()[0]
    skip = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
    protocol_check(systems)
    sshds = [s for s in systems if s.name in SSHD_SYSTEMS]
    if sshds and "sshd-memory" not in skip:
        bench_sshd_memory(sshds)
    for name, fn in (("ls-remote", bench_ls_remote), ("clones", bench_clones),
                     ("push", bench_push)):
        if name not in skip:
            fn(systems)
    ours = next((s for s in systems if s.name == "ours"), None)
    if ours is not None:
        for name, fn in (("keys-check", bench_keys_check), ("process", bench_process_costs)):
            if name in skip:
                continue
            try:
                fn(ours)
            except (Failed, RuntimeError) as e:
                log(f"FAILED {fn.__name__}: {e}")
                FAILED.setdefault(fn.__name__, {})["ours"] = str(e).splitlines()[0][:160]
    if "concurrency" not in skip:
        bench_concurrency(systems)
    if sshds and "burst" not in skip:
        bench_burst(sshds)
    if sshds and "sshd-memory" not in skip:
        settle()
        for s in sshds:
            EXTRA["sshd-memory"][s.name]["after"] = proc_mem(s.pid)
    EXTRA["load1"] = os.getloadavg()[0]
    log(f"measurements took {time.monotonic() - t0:.0f}s")
    text = report(systems)
    print(text)
    out = Path(os.environ.get("BENCH_OUT", BENCH / "results" / "latest.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    (out.with_suffix(".json")).write_text(json.dumps(
        dict(params=P, results={k: {s: v.values for s, v in d.items()}
                                for k, d in RESULTS.items()},
             extra={k: v for k, v in EXTRA.items() if k != "sections"}), indent=1))
    log(f"written {out}")


def cleanup():
    PROCS.stop_all()
    remove_users()
    for d in SOCKET_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    if os.environ.get("BENCH_KEEP", "") in ("", "0"):
        shutil.rmtree(RUN, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        cleanup()
