#!/usr/bin/env python3
"""Deterministic test repositories for the benchmark (fixed seeds, names and dates).

Writes three repositories under OUT (each is built in a temporary folder and renamed into place,
so an interrupted run never leaves a half-made cache entry behind):

  big.git      bare; one branch `main` of COMMITS_BIG commits adding incompressible blobs,
               about BIG_MB megabytes in total (the "~100 MB" clone);
  history.git  bare; `main` with HISTORY commits editing ~300 text files (a realistic history,
               packed with `git repack -adf` like a server-side repository after gc);
  client.git   bare; a copy of history.git plus branches `push-<i>` (i < PUSH_BRANCHES), each
               PUSH_COMMITS new commits on top of main: what the push benchmark sends.

Usage: gen_repos.py OUT BIG_MB HISTORY PUSH_BRANCHES PUSH_COMMITS
Nothing here depends on the clock, the user's git config or the environment.
"""

import os
import random
import shutil
import subprocess
import sys

EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z: every commit date is EPOCH + n minutes
AUTHOR = b"Bench Author <bench@example.com>"
WORDS = (
    "fn let mut impl struct enum match return self use pub mod trait where for in if else loop "
    "while break continue const static async await move ref type unsafe crate super dyn Some None "
    "Ok Err Vec String Option Result Box Arc Mutex HashMap config request response repository "
    "commit branch tag object packfile stream buffer reader writer error status token key user "
    "project gitaly shell upload receive archive hook message channel socket address timeout"
).split()


def git_env():
    """An environment where git ignores every global/system config and uses fixed identities."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        HOME="/nonexistent",
        LC_ALL="C",
        TZ="UTC",
    )
    return env


def git(repo, *args, stdin=None):
    subprocess.run(
        ["git", "-C", repo, *args], input=stdin, check=True, env=git_env(),
        stdout=subprocess.DEVNULL,
    )


class FastImport:
    """A tiny writer of `git fast-import` streams."""

    def __init__(self, repo):
        self.proc = subprocess.Popen(
            ["git", "-C", repo, "fast-import", "--quiet", "--done"],
            stdin=subprocess.PIPE, env=git_env(),
        )
        self.out = self.proc.stdin
        self.mark = 0
        self.minute = 0

    def blob(self, data):
        self.mark += 1
        self.out.write(b"blob\nmark :%d\ndata %d\n" % (self.mark, len(data)))
        self.out.write(data)
        self.out.write(b"\n")
        return self.mark

    def commit(self, ref, message, files, parent=None):
        """files: list of (path, blob mark). parent: a ref/mark to start from (first commit)."""
        self.minute += 1
        when = b"%d +0000" % (EPOCH + 60 * self.minute)
        msg = message.encode()
        self.mark += 1
        self.out.write(b"commit %s\nmark :%d\n" % (ref.encode(), self.mark))
        self.out.write(b"author %s %s\ncommitter %s %s\n" % (AUTHOR, when, AUTHOR, when))
        self.out.write(b"data %d\n%s\n" % (len(msg), msg))
        if parent is not None:
            self.out.write(b"from %s\n" % parent.encode())
        for path, mark in files:
            self.out.write(b"M 100644 :%d %s\n" % (mark, path.encode()))
        self.out.write(b"\n")
        return self.mark

    def finish(self):
        self.out.write(b"done\n")
        self.out.close()
        if self.proc.wait() != 0:
            raise SystemExit("git fast-import failed")


def init_bare(path):
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", path], check=True, env=git_env()
    )


def make_big(path, megabytes):
    init_bare(path)
    rng = random.Random(0xB16)
    fi = FastImport(path)
    blob_size = 512 * 1024
    per_commit = 4
    total = megabytes * 1024 * 1024
    n = 0
    commit_no = 0
    while n * blob_size < total:
        files = []
        for _ in range(per_commit):
            if n * blob_size >= total:
                break
            mark = fi.blob(rng.randbytes(blob_size))
            files.append((f"data/{n // 64:02d}/blob-{n:05d}.bin", mark))
            n += 1
        commit_no += 1
        fi.commit("refs/heads/main", f"Add binary data, part {commit_no}", files)
    fi.finish()
    git(path, "repack", "-adq")


def code_line(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def edit(rng, lines):
    """A small, realistic change: replace, insert or delete a few lines."""
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        at = rng.randrange(len(lines) + 1)
        if op < 0.5 or not lines:
            for _ in range(rng.randint(1, 6)):
                lines.insert(at, code_line(rng))
        elif op < 0.8:
            lines[min(at, len(lines) - 1)] = code_line(rng)
        elif len(lines) > 20:
            del lines[min(at, len(lines) - 1)]


def render(lines):
    return ("\n".join(lines) + "\n").encode()


def make_history(path, commits):
    init_bare(path)
    rng = random.Random(0x4157)
    files = {}
    for i in range(800):
        name = f"src/mod{i % 17:02d}/file{i:03d}.rs"
        files[name] = [code_line(rng) for _ in range(rng.randint(20, 300))]
    names = sorted(files)
    fi = FastImport(path)
    first = [(name, fi.blob(render(files[name]))) for name in names]
    fi.commit("refs/heads/main", "Initial import", first)
    for c in range(1, commits):
        changed = []
        for name in rng.sample(names, rng.randint(1, 3)):
            edit(rng, files[name])
            changed.append((name, fi.blob(render(files[name]))))
        fi.commit("refs/heads/main", f"Change {c}: {code_line(rng)}", changed)
    fi.finish()
    git(path, "repack", "-adfq", "--window=50", "--depth=50")


def make_client(path, history, branches, commits):
    subprocess.run(
        ["git", "clone", "-q", "--bare", "--no-local", history, path], check=True, env=git_env()
    )
    rng = random.Random(0x9054)
    fi = FastImport(path)
    for b in range(branches):
        ref = f"refs/heads/push-{b}"
        for c in range(commits):
            name = f"push/branch{b:02d}/file{c % 20:02d}.txt"
            body = "\n".join(code_line(rng) for _ in range(rng.randint(5, 40))) + "\n"
            mark = fi.blob(f"branch {b} commit {c}\n{body}".encode())
            fi.commit(ref, f"Push branch {b}, commit {c}", [(name, mark)],
                      parent="refs/heads/main" if c == 0 else None)
    fi.finish()


def build(out, name, fn, *args):
    final = os.path.join(out, name)
    if os.path.isdir(final):
        return
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    fn(tmp, *args)
    os.rename(tmp, final)


def main():
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    out, big_mb, history, branches, commits = sys.argv[1], *map(int, sys.argv[2:])
    os.makedirs(out, exist_ok=True)
    build(out, "big.git", make_big, big_mb)
    build(out, "history.git", make_history, history)
    build(out, "client.git", make_client, os.path.join(out, "history.git"), branches, commits)


if __name__ == "__main__":
    main()
