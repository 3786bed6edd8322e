//! The docs show the sshd_config the tests run. In `docs/operating.md`, `docs/install.md` and
//! `README.md` every ```` ```sshd_config ```` block must be a contiguous run of the (non-comment)
//! lines of one of the templates in `support/` that the end-to-end tests render, either with its
//! `@NAME@` placeholders or rendered for a production node (user `git`, root
//! `/opt/gitlab-shell`); `docs/operating.md` shows every template in full, and the operator's
//! part of `support/sshd_config.tmpl` (after its marker line, a `Match User` block) is shown in
//! full in all three. operating.md also names every `gitlab-shell-authorized-keys` subcommand and
//! `support/haproxy.cfg.example`.

const DOC: &str = include_str!("../../docs/operating.md");
const INSTALL: &str = include_str!("../../docs/install.md");
const README: &str = include_str!("../../README.md");

/// The templates and the tests that render them.
const TEMPLATES: [(&str, &str); 3] = [
    (
        "support/sshd_config.tmpl",
        include_str!("../../support/sshd_config.tmpl"),
    ),
    (
        "support/sshd_config_principals.tmpl",
        include_str!("../../support/sshd_config_principals.tmpl"),
    ),
    (
        "support/sshd_config_authorized_keys_file.tmpl",
        include_str!("../../support/sshd_config_authorized_keys_file.tmpl"),
    ),
];

/// The line of `support/sshd_config.tmpl` after which the operator's lines start.
pub const OPERATOR_MARKER: &str = "# --- GitLab Shell: append to /etc/ssh/sshd_config ---";

/// The operator's part of `support/sshd_config.tmpl` (after [`OPERATOR_MARKER`]).
pub fn operator_part(template: &str) -> &str {
    template
        .split_once(OPERATOR_MARKER)
        .map_or("", |(_, after)| after)
}

/// A template rendered for a production node, as docs/install.md shows it.
pub fn production(template: &str) -> String {
    template
        .replace("@USER@", "git")
        .replace("@ROOT@", "/opt/gitlab-shell")
        .replace("@CA_KEY@", "/etc/ssh/gitlab_user_ca.pub")
        .replace("@AUTH_FILE@", "/home/git/.ssh/authorized_keys")
}

/// Configuration lines: no blank lines, no comments, no trailing spaces.
fn config_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.trim_start().starts_with('#'))
        .collect()
}

/// The bodies of the fenced blocks whose info string is `lang`.
pub fn fenced_blocks(doc: &str, lang: &str) -> Vec<String> {
    enum State {
        Outside,
        Wanted(String),
        Other,
    }
    let mut blocks = Vec::new();
    let mut state = State::Outside;
    for line in doc.lines() {
        let fence = line.trim_start().strip_prefix("```");
        state = match (state, fence) {
            (State::Outside, Some(info)) if info.trim() == lang => State::Wanted(String::new()),
            (State::Outside, Some(_)) => State::Other,
            (State::Outside, None) => State::Outside,
            (State::Wanted(body), Some(_)) => {
                blocks.push(body);
                State::Outside
            }
            (State::Wanted(mut body), None) => {
                body.push_str(line);
                body.push('\n');
                State::Wanted(body)
            }
            (State::Other, Some(_)) => State::Outside,
            (State::Other, None) => State::Other,
        };
    }
    blocks
}

fn contains_run(haystack: &[&str], needle: &[&str]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_sshd_config_block_in_the_docs_is_a_tested_template() {
    for (name, doc) in [
        ("docs/operating.md", DOC),
        ("docs/install.md", INSTALL),
        ("README.md", README),
    ] {
        let blocks = fenced_blocks(doc, "sshd_config");
        for block in &blocks {
            let lines = config_lines(block);
            let source = TEMPLATES.iter().find(|(_, text)| {
                contains_run(&config_lines(text), &lines)
                    || contains_run(&config_lines(&production(text)), &lines)
            });
            assert!(
                source.is_some(),
                "{name} has an sshd_config block that is not in any template:\n{block}"
            );
        }
        // The operator's lines are shown in full, as a `Match User` block.
        let operator = operator_part(TEMPLATES[0].1);
        let rendered = production(operator);
        let wanted = [config_lines(operator), config_lines(&rendered)];
        assert!(wanted[0].iter().any(|l| l.starts_with("Match User @USER@")));
        assert!(
            blocks.iter().any(|b| wanted.contains(&config_lines(b))),
            "{name} does not show the operator's lines of support/sshd_config.tmpl in full:\n{}",
            wanted[1].join("\n")
        );
    }
    // operating.md shows every template in full (sshd_config.tmpl in its two parts).
    let blocks = fenced_blocks(DOC, "sshd_config");
    for (path, text) in TEMPLATES {
        let (first, second) = text.split_once(OPERATOR_MARKER).unwrap_or((text, ""));
        for part in [first, second] {
            let lines = config_lines(part);
            if lines.is_empty() {
                continue;
            }
            assert!(
                blocks.iter().any(|b| config_lines(b) == lines),
                "docs/operating.md does not show (this part of) {path} in full:\n{}",
                lines.join("\n")
            );
        }
        assert!(DOC.contains(path), "docs/operating.md does not name {path}");
    }
}

#[test]
fn the_match_block_confines_the_key_lookup_to_the_git_user() {
    // Every line after `Match User` up to `Match all` is indented; nothing of the key lookup or
    // password settings is global (an administrator's authorized_keys must keep working).
    let operator = operator_part(TEMPLATES[0].1);
    let mut inside = false;
    for line in config_lines(operator) {
        if line.starts_with("Match User ") {
            inside = true;
        } else if line == "Match all" {
            inside = false;
        } else if !inside {
            assert!(line.starts_with("AcceptEnv "), "global line: {line}");
        } else {
            assert!(line.starts_with("    "), "not indented: {line}");
        }
    }
    assert!(!inside, "the Match block is not closed");
}

#[test]
fn the_docs_name_every_keys_tool_subcommand_and_the_haproxy_example() {
    for needle in [
        "add-key <key-id> <public key>",
        "batch-add-keys",
        "rm-key <key-id> [<public key>]",
        "clear",
        "list-keys",
        "list-key-ids",
        "check-permissions",
        "support/haproxy.cfg.example",
        "make install",
        "make setup",
        "make bench",
        "make demo",
        "gitlab-shell-check",
    ] {
        assert!(DOC.contains(needle), "docs/operating.md lacks {needle:?}");
    }
}

#[test]
fn fenced_block_parser_keeps_only_the_wanted_language() {
    let doc = "x\n```sh\nmake\n```\n```sshd_config\nPort 1\n# c\n```\n```\nplain\n```\n";
    assert_eq!(fenced_blocks(doc, "sshd_config"), vec!["Port 1\n# c\n"]);
}

const TRIAL: &str = include_str!("../../docs/trial.md");

#[test]
fn the_fixture_example_of_the_trial_doc_loads() {
    let blocks = fenced_blocks(TRIAL, "yaml fixture");
    assert_eq!(blocks.len(), 1, "docs/trial.md: one ```yaml fixture block");
    let fixture = test_support::stub_api::Fixture::from_yaml_str(&blocks[0])
        .unwrap_or_else(|e| panic!("docs/trial.md fixture: {e:#}"));
    assert_eq!(fixture.users[0].username, "demo");
    assert_eq!(fixture.keys[0].user.as_deref(), Some("demo"));
    assert_eq!(fixture.projects[0].path, "demo/hello");
    assert_eq!(fixture.gitaly.token, "trial-token");
    // Every section the fixture has is named in the prose.
    for section in [
        "check",
        "gitaly",
        "users[]",
        "keys[]",
        "projects[]",
        "personal_access_token",
        "lfs",
        "post_receive",
        "geo_responses",
    ] {
        assert!(TRIAL.contains(&format!("- `{section}`")), "{section}");
    }
}

#[test]
fn the_stand_ins_answer_help_naming_the_trial_doc() {
    for (binary, args) in [
        ("stub-api", &["--help"][..]),
        ("dev-gitaly", &["--help"][..]),
    ] {
        let run = test_support::Cmd::new(test_support::paths::built_binary(binary))
            .args(args)
            .run();
        run.assert_success().assert_stdout_contains("docs/trial.md");
    }
}

#[test]
fn man_pages_render_without_warnings() {
    let dir = test_support::paths::workspace_root().join("support/man");
    let mut pages: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    assert_eq!(pages.len(), 6, "{pages:?}");
    for page in pages {
        let run = test_support::Cmd::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(&page)
            .run();
        run.assert_success().assert_stderr("");
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(text.starts_with(".TH "), "{}", page.display());
        assert!(text.contains(".SH NAME"), "{}", page.display());
    }
}
