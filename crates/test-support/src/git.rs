//! Deterministic git: a client environment independent of the machine's git config, bare
//! repositories seeded with `git fast-import` (fixed authors and dates, so object ids are the same
//! on every run), ref inspection, and seeded pseudo-random content for large-repository tests.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::run::Cmd;

/// Seconds since the epoch of the first seeded commit (2023-11-14T22:13:20Z).
pub const BASE_TIME: i64 = 1_700_000_000;

/// A `git` environment: its own `HOME` with a small `.gitconfig`, no system config, fixed author
/// and committer. Everything else (PATH) is inherited.
#[derive(Clone, Debug)]
pub struct GitEnv {
    home: PathBuf,
}

impl GitEnv {
    /// Creates `<home>/.gitconfig` (default branch `main`, identity, quiet advice).
    #[track_caller]
    pub fn new(home: &Path) -> GitEnv {
        crate::paths::make_dir(home);
        let config = "[init]\n\tdefaultBranch = main\n\
                      [user]\n\tname = E2E Tester\n\temail = e2e@example.com\n\
                      [advice]\n\tdetachedHead = false\n\
                      [core]\n\tautocrlf = false\n";
        if let Err(e) = fs::write(home.join(".gitconfig"), config) {
            panic!("cannot write {}/.gitconfig: {e}", home.display());
        }
        GitEnv {
            home: home.to_owned(),
        }
    }

    /// The `HOME` of this environment.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `git <args>` in this environment.
    pub fn git(&self) -> Cmd {
        Cmd::new("git")
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "E2E Tester")
            .env("GIT_AUTHOR_EMAIL", "e2e@example.com")
            .env("GIT_AUTHOR_DATE", format!("@{BASE_TIME} +0000"))
            .env("GIT_COMMITTER_NAME", "E2E Tester")
            .env("GIT_COMMITTER_EMAIL", "e2e@example.com")
            .env("GIT_COMMITTER_DATE", format!("@{BASE_TIME} +0000"))
            .env("GIT_TERMINAL_PROMPT", "0")
    }

    /// `git --git-dir <git_dir> <args>`.
    pub fn at(&self, git_dir: &Path) -> Cmd {
        self.git().arg("--git-dir").arg(git_dir)
    }

    /// `git init --bare <path>` (default branch `main`).
    #[track_caller]
    pub fn init_bare(&self, path: &Path) {
        self.git()
            .args(["init", "--quiet", "--bare"])
            .arg(path)
            .run()
            .assert_success();
    }

    /// The object id `rev` resolves to in `git_dir`, or `None`.
    pub fn rev_parse(&self, git_dir: &Path, rev: &str) -> Option<String> {
        let run = self
            .at(git_dir)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(rev)
            .run();
        (run.code == 0).then(|| run.stdout_str().trim().to_owned())
    }

    /// Every ref of `git_dir` as `(name, object id)`, sorted by name.
    #[track_caller]
    pub fn refs(&self, git_dir: &Path) -> Vec<(String, String)> {
        let run = self
            .at(git_dir)
            .args(["for-each-ref", "--format=%(refname) %(objectname)"])
            .run();
        run.assert_success();
        let mut refs: Vec<(String, String)> = run
            .stdout_str()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(r, o)| (r.to_owned(), o.to_owned())))
            .collect();
        refs.sort();
        refs
    }

    /// Appends `commits` to `git_dir` with `git fast-import`. A branch that already exists is
    /// continued from its tip. Returns the new tip of each commit's branch, in order.
    #[track_caller]
    pub fn seed(&self, git_dir: &Path, commits: &[Commit]) -> Vec<String> {
        let mut stream = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (i, c) in commits.iter().enumerate() {
            let mut head = String::new();
            let time = c.time.unwrap_or(BASE_TIME + i as i64 * 60);
            let _ = writeln!(head, "commit refs/heads/{}\nmark :{}", c.branch, i + 1);
            let _ = writeln!(head, "author E2E Tester <e2e@example.com> {time} +0000");
            let _ = writeln!(head, "committer E2E Tester <e2e@example.com> {time} +0000");
            let _ = writeln!(head, "data {}\n{}", c.message.len(), c.message);
            if !seen.contains(&c.branch.as_str()) {
                seen.push(&c.branch);
                if let Some(tip) = self.rev_parse(git_dir, &format!("refs/heads/{}", c.branch)) {
                    let _ = writeln!(head, "from {tip}");
                }
            }
            stream.extend_from_slice(head.as_bytes());
            for (path, content) in &c.files {
                stream.extend_from_slice(
                    format!("M 100644 inline {path}\ndata {}\n", content.len()).as_bytes(),
                );
                stream.extend_from_slice(content);
                stream.push(b'\n');
            }
            stream.push(b'\n');
        }
        self.at(git_dir)
            .args(["fast-import", "--quiet"])
            .stdin(stream)
            .timeout(std::time::Duration::from_secs(300))
            .run()
            .assert_success();
        commits
            .iter()
            .map(|c| {
                self.rev_parse(git_dir, &format!("refs/heads/{}", c.branch))
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// One commit for [`GitEnv::seed`].
#[derive(Clone, Debug)]
pub struct Commit {
    /// Branch name without `refs/heads/`.
    pub branch: String,
    /// Commit message.
    pub message: String,
    /// Files written (added or replaced) by this commit: path and content.
    pub files: Vec<(String, Vec<u8>)>,
    /// Author and committer time; `BASE_TIME + 60 s × index` when `None`.
    pub time: Option<i64>,
}

impl Commit {
    /// A commit on `branch` that writes one file.
    pub fn new(branch: &str, message: &str, path: &str, content: impl Into<Vec<u8>>) -> Commit {
        Commit {
            branch: branch.to_owned(),
            message: message.to_owned(),
            files: vec![(path.to_owned(), content.into())],
            time: None,
        }
    }

    /// Adds another file.
    pub fn file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Commit {
        self.files.push((path.to_owned(), content.into()));
        self
    }
}

/// `len` pseudo-random (incompressible) bytes from `seed` (xorshift64*): the same on every run.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_history_is_identical_on_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let git = GitEnv::new(&dir.path().join("home"));
        let mut tips = Vec::new();
        for name in ["a.git", "b.git"] {
            let repo = dir.path().join(name);
            git.init_bare(&repo);
            git.seed(
                &repo,
                &[Commit::new("main", "first\n", "README.md", "hello\n")],
            );
            let t = git.seed(
                &repo,
                &[Commit::new(
                    "main",
                    "second\n",
                    "x.bin",
                    random_bytes(7, 100),
                )],
            );
            tips.push(t[0].clone());
            let parent = git.rev_parse(&repo, "main^").unwrap();
            assert_eq!(git.rev_parse(&repo, "main~1"), Some(parent));
        }
        assert_eq!(tips[0], tips[1]);
        assert_eq!(random_bytes(1, 16), random_bytes(1, 16));
        assert_ne!(random_bytes(1, 16), random_bytes(2, 16));
    }
}
