//! The docs show the sshd_config the tests run. In `docs/operating.md`, `docs/install.md` and
//! `README.md` every ```` ```sshd_config ```` block must be a contiguous run of the (non-comment)
//! lines of one of the templates in `support/` that the end-to-end tests render, either with its
//! `@NAME@` placeholders or rendered for a production node (user `git`, root
//! `/opt/gitlab-shell`); `docs/operating.md` shows every template in full, and the operator's
//! part of `support/sshd_config.tmpl` (after its marker line, a `Match User` block) is shown in
//! full in all three. operating.md also names every `gitlab-shell-authorized-keys` subcommand and
//! `support/haproxy.cfg.example`.
//!
//! Code comments cite the project's own contract as `behaviour <section sign>N.M`
//! (docs/behaviour.md) and `gitaly.md <section sign>N` (docs/gitaly.md): every such citation in
//! the `.rs` files under `crates/`, `tests/` and `fuzz/` must name a heading those pages have, and
//! no section sign may stand without a named document (or an `issue N` reference). And
//! docs/behaviour.md quotes every user-visible message of `gitlab_shell::messages`.

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

// --- Section citations in code comments -----------------------------------------------------

/// The section sign, spelled as an escape so this file holds no citation of its own.
const SECTION: char = '\u{a7}';

const BEHAVIOUR_DOC: &str = include_str!("../../docs/behaviour.md");
const GITALY_DOC: &str = include_str!("../../docs/gitaly.md");

/// The document a citation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cited {
    /// `behaviour` / `behaviour.md`: docs/behaviour.md.
    Behaviour,
    /// `gitaly.md`: docs/gitaly.md.
    Gitaly,
    /// `issue N`: an issue of the project, not a document; not checked.
    Issue,
}

/// One citation found in a source text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Citation {
    doc: Cited,
    section: String,
    line: usize,
}

/// The section numbers of a markdown page: `## 7.` gives `7`, `### 7.2 Title` gives `7.2`
/// (headings inside fenced blocks do not count).
fn section_numbers(doc: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut fenced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        if fenced {
            continue;
        }
        let title = rest.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let token = title.split_whitespace().next().unwrap_or("");
        let number = token.trim_end_matches('.');
        if number.starts_with(|c: char| c.is_ascii_digit())
            && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            out.insert(number.to_owned());
        }
    }
    out
}

/// Skips whitespace and comment markers (`//!`, `///`, `*`) between words of a comment.
fn skip_comment_space(text: &str, mut at: usize) -> usize {
    while let Some(c) = text[at..].chars().next() {
        if c.is_whitespace() || matches!(c, '/' | '!' | '*') {
            at += c.len_utf8();
        } else {
            break;
        }
    }
    at
}

/// Skips what may stand between two citations of one list: `, `, `and`, `#12` (an item of a
/// section), `items 6 and 8`, `item 1–3`, comment markers across lines.
fn skip_list_separators(text: &str, mut at: usize) -> usize {
    loop {
        let start = at;
        at = skip_comment_space(text, at);
        let rest = &text[at..];
        if let Some(r) = rest.strip_prefix(',') {
            at = text.len() - r.len();
        } else if rest.starts_with("and ") {
            at += 3;
        } else if rest.starts_with("items ") {
            at += 5;
        } else if rest.starts_with("item ") {
            at += 4;
        } else if let Some(r) = rest.strip_prefix('#') {
            let digits = r.len() - r.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return start;
            }
            at += 1 + digits;
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            let r = rest
                .trim_start_matches(|c: char| c.is_ascii_digit() || matches!(c, '\u{2013}' | '-'));
            at = text.len() - r.len();
        }
        if at == start {
            return at;
        }
    }
}

/// The document named just before `at` (`behaviour`, `behaviour.md`, `gitaly.md`, `issue N`),
/// with the offset after it.
fn qualifier_at(text: &str, at: usize) -> Option<(Cited, usize)> {
    let boundary = text[..at]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != '-');
    if !boundary {
        return None;
    }
    let rest = &text[at..];
    for (word, doc) in [
        ("behaviour.md", Cited::Behaviour),
        ("behaviour", Cited::Behaviour),
        ("gitaly.md", Cited::Gitaly),
    ] {
        if rest.starts_with(word) {
            return Some((doc, at + word.len()));
        }
    }
    let r = rest.strip_prefix("issue ")?;
    let digits = r.len() - r.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    (digits > 0).then_some((Cited::Issue, at + "issue ".len() + digits))
}

/// Every citation in `text`, and the line numbers of section signs that follow no named
/// document.
fn citations(text: &str) -> (Vec<Citation>, Vec<usize>) {
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut consumed = std::collections::BTreeSet::new();
    let mut at = 0;
    while at < text.len() {
        if let Some((doc, after)) = qualifier_at(text, at) {
            let mut sign = skip_comment_space(text, after);
            while text[sign..].starts_with(SECTION) {
                consumed.insert(sign);
                let number_start = sign + SECTION.len_utf8();
                let tail = &text[number_start..];
                let mut len = tail.len()
                    - tail
                        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
                        .len();
                while tail[..len].ends_with('.') {
                    len -= 1;
                }
                if len == 0 {
                    break;
                }
                found.push(Citation {
                    doc,
                    section: tail[..len].to_owned(),
                    line: line_of(sign),
                });
                sign = skip_list_separators(text, number_start + len);
            }
            at = after;
            continue;
        }
        at += text[at..].chars().next().map_or(1, char::len_utf8);
    }
    let stray = text
        .match_indices(SECTION)
        .map(|(i, _)| i)
        .filter(|i| !consumed.contains(i))
        .map(line_of)
        .collect();
    (found, stray)
}

/// The `.rs` files under `dir`, skipping `target` folders and hidden ones.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_section_cited_in_the_code_exists_in_the_project_docs() {
    let behaviour = section_numbers(BEHAVIOUR_DOC);
    let gitaly = section_numbers(GITALY_DOC);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["crates", "tests", "fuzz"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    let mut problems = Vec::new();
    let (mut to_behaviour, mut to_gitaly) = (0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let (found, stray) = citations(&text);
        for c in found {
            let (known, page) = match c.doc {
                Cited::Behaviour => {
                    to_behaviour += 1;
                    (&behaviour, "docs/behaviour.md")
                }
                Cited::Gitaly => {
                    to_gitaly += 1;
                    (&gitaly, "docs/gitaly.md")
                }
                Cited::Issue => continue,
            };
            if !known.contains(&c.section) {
                problems.push(format!(
                    "{shown}:{}: cites {SECTION}{}, which {page} does not have",
                    c.line, c.section
                ));
            }
        }
        for line in stray {
            problems.push(format!(
                "{shown}:{line}: a {SECTION} reference without `behaviour` or `gitaly.md` before it"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The scan really saw the code base (about 70 and 20 citations when this test was written).
    assert!(
        files.len() > 100 && to_behaviour >= 50 && to_gitaly >= 15,
        "only {} files, {to_behaviour} behaviour and {to_gitaly} gitaly.md citations found",
        files.len()
    );
}

#[test]
fn citation_scanner_reads_lists_and_flags_unknown_and_unnamed_sections() {
    let text = "//! (behaviour S3.4 #3 and S4): x\n//! gitaly.md S4.1 items 6 and 8; then\n\
                //! (behaviour\n//! S1.1, S1.3, S3.1), issue 5 S3, S4, and a bare (S6.2).\n\
                // behaviour S2. ends a sentence; the behaviours S9 are no qualifier\n"
        .replace('S', &SECTION.to_string());
    let (found, stray) = citations(&text);
    let got: Vec<(Cited, &str, usize)> = found
        .iter()
        .map(|c| (c.doc, c.section.as_str(), c.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (Cited::Behaviour, "3.4", 1),
            (Cited::Behaviour, "4", 1),
            (Cited::Gitaly, "4.1", 2),
            (Cited::Behaviour, "1.1", 4),
            (Cited::Behaviour, "1.3", 4),
            (Cited::Behaviour, "3.1", 4),
            (Cited::Issue, "3", 4),
            (Cited::Issue, "4", 4),
            (Cited::Behaviour, "2", 5),
        ]
    );
    assert_eq!(stray, vec![4, 5], "the bare S6.2 and the behaviours S9");

    let headings = section_numbers(
        "# T\n## 0. Intro\n### 1.6 Framing\n```\n## 9. in a fence\n```\n#### 3.4\n## Words\n",
    );
    let headings: Vec<&str> = headings.iter().map(String::as_str).collect();
    assert_eq!(headings, vec!["0", "1.6", "3.4"]);
}

// --- Messages in the behaviour contract -------------------------------------------------------

/// Every customer-facing string of `gitlab_shell::messages` (and the few kept next to their
/// module) is quoted in docs/behaviour.md, line by line; placeholders as the page writes them and
/// a TAB as `\t`.
#[test]
fn behaviour_md_quotes_every_user_visible_message() {
    use gitlab_shell::messages as m;
    let texts: Vec<String> = vec![
        m::ONLY_SSH_ALLOWED.into(),
        format!("{}: {}", m::INVALID_SSH_COMMAND, m::INVALID_COMMAND_LINE),
        m::DISALLOWED_COMMAND.into(),
        m::WHO_INVALID.into(),
        format!("{}: {}", m::FAILED_TO_GET_USERNAME, m::WHO_INVALID),
        m::FAILED_TO_DETERMINE_EXECUTABLE.into(),
        format!("{}: <error>", m::FAILED_TO_READ_CONFIG),
        m::KEYS_FAILED_TO_DETERMINE_EXECUTABLE.into(),
        m::KEYS_FAILED_TO_READ_CONFIG.into(),
        m::INTERNAL_API_UNREACHABLE.into(),
        m::PARSING_FAILED.into(),
        m::UNKNOWN_URL_PREFIX.into(),
        m::welcome("<username>"),
        m::WELCOME_ANONYMOUS.into(),
        m::keys_check_usage(7).replace('7', "<n>"),
        m::NO_USERNAME_PROVIDED.into(),
        m::NO_KEY_PROVIDED.into(),
        m::no_key_found("<key>"),
        m::principals_check_usage(7).replace('7', "<n>"),
        m::NO_KEY_ID_PROVIDED.into(),
        m::INVALID_PRINCIPAL.into(),
        format!("{}: OK", m::CHECK_API),
        format!("{}: FAILED - <error>", m::CHECK_API),
        format!("{}: OK", m::CHECK_REDIS),
        format!("{}: FAILED", m::CHECK_REDIS),
        m::RECOVERY_QUESTION.into(),
        m::RECOVERY_DECLINED.into(),
        m::RECOVERY_ERROR.into(),
        m::RECOVERY_CODES_HEAD.into(),
        m::RECOVERY_CODES_TAIL.into(),
        m::OTP_PROMPT.into(),
        m::OTP_SUCCESS.into(),
        m::OTP_PUSH_SUCCESS.into(),
        format!("{}: {}", m::OTP_FAILED, m::OTP_BLANK),
        format!("{}: {}", m::OTP_FAILED, m::DEADLINE_EXCEEDED),
        m::PAT_USAGE.into(),
        m::pat_invalid_ttl("<raw>"),
        m::invalid_key_id("<id>"),
        m::invalid_value("<value>"),
        gitlab_shell::api::geo_git::REPO_UNAVAILABLE.into(),
        gitlab_shell::keyline::SSH_OPTIONS.into(),
        // `messages::FAILED_TO_CREATE_COMMAND` is defined but never printed.
    ];
    let mut missing = Vec::new();
    for text in &texts {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let quoted = format!("`{}", line.replace('\t', "\\t"));
            if !BEHAVIOUR_DOC.contains(&quoted) {
                missing.push(line.to_owned());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/behaviour.md does not quote:\n{}",
        missing.join("\n")
    );
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
