#!/usr/bin/env python3
"""The benchmark harness (`make bench`): three ways to serve the same repositories over a private
sshd on 127.0.0.1, measured side by side in one run.

  floor     OpenSSH + a forced command that execs git-upload-pack / git-receive-pack directly;
  gitolite  gitolite3 (Debian package) for a dedicated system user;
  ours      OpenSSH + AuthorizedKeysCommand = our gitlab-shell-authorized-keys-check, forced
            command `gitlab-shell key-N`, the stub internal API and the dev Gitaly.

Runs as root (it creates two system users and starts sshd); everything listens on 127.0.0.1 only
and every process it starts is stopped by PID at the end. See bench/README.md.
"""

import json
import os
import platform
import pwd
import random
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
WORK = Path(os.environ.get("BENCH_WORK", BENCH / "work"))
RUN = WORK / "run"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")

# Sizes and repetitions. Full: about 10 minutes on 2 cores; quick: about 2 minutes.
P = dict(
    big_mb=20 if QUICK else 100,
    history=1000 if QUICK else 4000,
    push_commits=200,
    reps_ls=10 if QUICK else 30,
    reps_clone=3 if QUICK else 5,
    reps_push=3 if QUICK else 5,
    keys_calls=100 if QUICK else 500,
    concurrency=(32, 64),
)

USER = "gsbench"          # login user of floor and ours (the "git" user)
GL_USER = "gsbench-gl"    # gitolite's user
SYSTEMS = ("floor", "gitolite", "ours")
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
        return p

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


PROCS = Procs()
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
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    if auth_lines is not None:
        lines = [ln for ln in lines if not ln.startswith("AuthorizedKeys")] + auth_lines
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


def setup_ours(cache, pub):
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# measuring


def run_measured(args, env, cwd=None):
    """Runs args to completion; returns (wall seconds, rusage of the child, exit code, stderr)."""
    err = open(RUN / "last-stderr", "w+b")
    t0 = time.perf_counter()
    p = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=err)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    return wall, ru, p.returncode, err.read().decode(errors="replace")


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


def bench_ls_remote(systems):
    log(f"ls-remote x{P['reps_ls']}")
    for s in systems:   # warm-up (and a functional check)
        wall, _, rc, err = run_measured(["git", "ls-remote", s.url("history")], s.env())
        if rc != 0:
            raise RuntimeError(f"ls-remote via {s.name} failed: {err}")
    for _, order in rotations(systems, P["reps_ls"]):
        for s in order:
            wall, _, rc, err = run_measured(["git", "ls-remote", s.url("history")], s.env())
            if rc != 0:
                raise RuntimeError(f"ls-remote via {s.name} failed: {err}")
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
        raise RuntimeError(f"clone of {repo} via {s.name} (v{proto}) failed: {err}")
    size = pack_bytes(dest)
    shutil.rmtree(dest, ignore_errors=True)
    return wall, size


def bench_clones(systems):
    dest = RUN / "clone-dest"
    for repo in REPOS:
        for proto in (2, 0):
            key = f"clone {repo} v{proto}"
            log(f"{key} x{P['reps_clone']}")
            for s in systems:
                clone_once(s, repo, proto, dest)   # warm-up
            for _, order in rotations(systems, P["reps_clone"]):
                for s in order:
                    wall, size = clone_once(s, repo, proto, dest)
                    record(key, s.name, wall)
                    record(key + " MB/s", s.name, size / wall / 1e6)
                    EXTRA[f"pack {repo}"] = size


def bench_push(systems):
    log(f"push of {P['push_commits']} commits x{P['reps_push']}")
    client = RUN / "client.git"
    for i, order in rotations(systems, P["reps_push"]):
        for s in order:
            wall, _, rc, err = run_measured(
                ["git", "-C", client, "push", "-q", s.url("history"),
                 f"refs/heads/push-{i}:refs/heads/push-{i}"], s.env())
            if rc != 0:
                raise RuntimeError(f"push via {s.name} failed: {err}")
            record("push", s.name, wall)


class MemSampler(threading.Thread):
    """Peak of (MemTotal - MemAvailable) over a window, sampled every 20 ms."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop_flag = threading.Event()
        self.base = self.used()
        self.peak = self.base

    @staticmethod
    def used():
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0])
        return (info["MemTotal"] - info["MemAvailable"]) * 1024

    def run(self):
        while not self.stop_flag.wait(0.02):
            self.peak = max(self.peak, self.used())

    def finish(self):
        self.stop_flag.set()
        self.join()
        return self.peak - self.base


def bench_concurrency(systems):
    for n in P["concurrency"]:
        for s in systems:
            log(f"{n} concurrent clones via {s.name}")
            dests = [RUN / f"conc-{i}" for i in range(n)]
            for d in dests:
                shutil.rmtree(d, ignore_errors=True)
            sampler = MemSampler()
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
            peak = sampler.finish()
            for d in dests:
                shutil.rmtree(d, ignore_errors=True)
            EXTRA.setdefault("concurrency", []).append(
                dict(n=n, system=s.name, failures=failures, wall=wall, peak=peak,
                     errors=errors[:3]))


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


def report(systems):
    names = [s.name for s in systems]
    m = machine_info()
    out = ["# Benchmark results", "",
           f"- date: {m['date']}; mode: {m['mode']}",
           f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem']} RAM, Linux {m['kernel']}",
           f"- {m['git']}; {m['ssh']}",
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
        cells = [r[n].fmt(scale, digits) if n in r else "n/a" for n in names]
        ratios = [ratio(key, n) for n in names if n != "floor"]
        out.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    out.append("")
    if EXTRA.get("concurrency"):
        out += ["Concurrent clones of `history` (v2):", "",
                "| clones | system | failures | total wall, s | peak memory (system-wide), MB |",
                "|---|---|---|---|---|"]
        for c in EXTRA["concurrency"]:
            out.append(f"| {c['n']} | {c['system']} | {c['failures']} | {c['wall']:.2f} | "
                       f"{c['peak'] / 1e6:.0f} |")
        for c in EXTRA["concurrency"]:
            for e in c["errors"]:
                out.append(f"- {c['system']} x{c['n']} error: `{e[:200]}`")
        out.append("")
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
    only = os.environ.get("BENCH_SYSTEMS", ",".join(SYSTEMS)).split(",")
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o755)
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
    setups = dict(floor=setup_floor, gitolite=setup_gitolite, ours=setup_ours)
    for name in SYSTEMS:
        if name in only:
            log(f"setting up {name}")
            systems.append(setups[name](cache, pub))
    t0 = time.monotonic()
    protocol_check(systems)
    bench_ls_remote(systems)
    bench_clones(systems)
    bench_push(systems)
    bench_concurrency(systems)
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
