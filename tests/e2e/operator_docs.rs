//! `docs/operating.md` shows the sshd_config the tests run: every ```` ```sshd_config ```` block
//! must be a contiguous run of the (non-comment) lines of one of the templates in `support/`
//! that the end-to-end tests render, and every template must be shown in full. The page also
//! names every `gitlab-shell-authorized-keys` subcommand and `support/haproxy.cfg.example`.

const DOC: &str = include_str!("../../docs/operating.md");

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

/// Configuration lines: no blank lines, no comments, no trailing spaces.
fn config_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.trim_start().starts_with('#'))
        .collect()
}

/// The bodies of the fenced blocks whose info string is `lang`.
fn fenced_blocks(doc: &str, lang: &str) -> Vec<String> {
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
    let blocks = fenced_blocks(DOC, "sshd_config");
    assert!(blocks.len() >= TEMPLATES.len(), "{blocks:?}");
    for block in &blocks {
        let lines = config_lines(block);
        let source = TEMPLATES
            .iter()
            .find(|(_, text)| contains_run(&config_lines(text), &lines));
        assert!(
            source.is_some(),
            "docs/operating.md has an sshd_config block that is not in any template:\n{block}"
        );
    }
    for (path, text) in TEMPLATES {
        let lines = config_lines(text);
        assert!(
            blocks.iter().any(|b| config_lines(b) == lines),
            "docs/operating.md does not show {path} in full:\n{}",
            lines.join("\n")
        );
        assert!(DOC.contains(path), "docs/operating.md does not name {path}");
    }
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
