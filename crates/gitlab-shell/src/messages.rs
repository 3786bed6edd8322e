//! Every customer-facing string GitLab Shell prints, in one place, byte for byte as GitLab Shell
//! v14.45.0 prints them (behaviour §1.7). Tests compare against these constants.

/// `gitlab-shell` run outside an SSH session (no `SSH_CONNECTION`).
pub const ONLY_SSH_ALLOWED: &str = "Only SSH allowed";
/// Prefix of a `SSH_ORIGINAL_COMMAND` that go-shellwords refuses.
pub const INVALID_SSH_COMMAND: &str = "Invalid SSH command";
/// The go-shellwords error text.
pub const INVALID_COMMAND_LINE: &str = "invalid command line string";
/// Unknown, disabled or badly formed SSH command.
pub const DISALLOWED_COMMAND: &str = "Disallowed command";
/// No identity (`key-N` / `username-X`) on the command line.
pub const WHO_INVALID: &str = "who='' is invalid";
/// Prefix of every discover error shown to the user.
pub const FAILED_TO_GET_USERNAME: &str = "Failed to get username";

/// Start-up failures (`gitlab-shell`, principals check, check).
pub const FAILED_TO_DETERMINE_EXECUTABLE: &str = "Failed to determine executable, exiting";
/// Config failure prefix (`gitlab-shell`, principals check, check).
pub const FAILED_TO_READ_CONFIG: &str = "Failed to read config, exiting";
/// The authorized-keys check's own lower-case start-up failures (no detail).
pub const KEYS_FAILED_TO_DETERMINE_EXECUTABLE: &str = "failed to determine executable, exiting";
/// See [`KEYS_FAILED_TO_DETERMINE_EXECUTABLE`].
pub const KEYS_FAILED_TO_READ_CONFIG: &str = "failed to read config, exiting";
/// `gitlab-shell-check` command construction failure prefix.
pub const FAILED_TO_CREATE_COMMAND: &str = "Failed to create command";

/// Internal API errors (behaviour §3.3).
pub const INTERNAL_API_UNREACHABLE: &str = "Internal API unreachable";
/// A 2xx/3xx body that is not the expected JSON.
pub const PARSING_FAILED: &str = "parsing failed";
/// Client construction: `gitlab_url` with an unknown scheme.
pub const UNKNOWN_URL_PREFIX: &str = "error creating http client: unknown GitLab URL prefix";

/// Welcome line for a known user; `{}` is the username.
pub fn welcome(username: &str) -> String {
    format!("Welcome to GitLab, @{username}!")
}
/// Welcome line when `/discover` says anonymous.
pub const WELCOME_ANONYMOUS: &str = "Welcome to GitLab, Anonymous!";

/// authorized-keys check usage (two lines; `{n}` is the argument count).
pub fn keys_check_usage(n: usize) -> String {
    format!(
        "# Insufficient arguments. {n}. Usage\n#\tgitlab-shell-authorized-keys-check <expected-username> <actual-username> <key>"
    )
}
/// authorized-keys check: empty expected or actual user.
pub const NO_USERNAME_PROVIDED: &str = "# No username provided";
/// authorized-keys check: empty key.
pub const NO_KEY_PROVIDED: &str = "# No key provided";
/// authorized-keys check: any lookup failure (stdout, exit 0).
pub fn no_key_found(key: &str) -> String {
    format!("# No key was found for {key}")
}
/// authorized-principals check usage (two lines).
pub fn principals_check_usage(n: usize) -> String {
    format!(
        "# Insufficient arguments. {n}. Usage\n#\tgitlab-shell-authorized-principals-check <key-id> <principal1> [<principal2>...]"
    )
}
/// authorized-principals check: empty key id.
pub const NO_KEY_ID_PROVIDED: &str = "# No key_id provided";
/// authorized-principals check: an empty principal.
pub const INVALID_PRINCIPAL: &str = "# An invalid principal was provided";

/// `gitlab-shell-check` line heads.
pub const CHECK_API: &str = "Internal API available";
/// See [`CHECK_API`].
pub const CHECK_REDIS: &str = "Redis available via internal API";

/// 2FA recovery: the question (two lines).
pub const RECOVERY_QUESTION: &str = "Are you sure you want to generate new two-factor recovery codes?\nAny existing recovery codes you saved will be invalidated. (yes/no)\n";
/// 2FA recovery: the user said anything but `yes`.
pub const RECOVERY_DECLINED: &str =
    "\nNew recovery codes have *not* been generated. Existing codes will remain valid.\n";
/// 2FA recovery: the API failed; the error text follows on its own line.
pub const RECOVERY_ERROR: &str =
    "\nAn error occurred while trying to generate new recovery codes.\n";
/// 2FA recovery: head of the success text.
pub const RECOVERY_CODES_HEAD: &str = "\nYour two-factor authentication recovery codes are:\n\n";
/// 2FA recovery: tail of the success text.
pub const RECOVERY_CODES_TAIL: &str = "\n\nDuring sign in, use one of the codes above when prompted for\nyour two-factor code. Then, visit your Profile Settings and add\na new device so you do not lose access to your account again.\n";

/// 2FA verify prompt (no newline).
pub const OTP_PROMPT: &str = "OTP: ";
/// 2FA verify: manual OTP accepted.
pub const OTP_SUCCESS: &str = "OTP validation successful. Git operations are now allowed.";
/// 2FA verify: push approved.
pub const OTP_PUSH_SUCCESS: &str =
    "OTP has been validated by Push Authentication. Git operations are now allowed.";
/// 2FA verify: failure prefix.
pub const OTP_FAILED: &str = "OTP validation failed";
/// 2FA verify: empty answer. The Go source has the full stop (checked against the Go
/// binary); behaviour §1.7 quotes it without.
pub const OTP_BLANK: &str = "OTP cannot be blank.";
/// 2FA verify: the 30 s deadline passed.
pub const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

/// PAT usage error.
pub const PAT_USAGE: &str = "Usage: personal_access_token <name> <scope1[,scope2,...]> [ttl_days]";
/// PAT: bad TTL.
pub fn pat_invalid_ttl(raw: &str) -> String {
    format!("Invalid value for days_ttl: '{raw}'")
}

/// keyline validation: bad id.
pub fn invalid_key_id(id: &str) -> String {
    format!("invalid key_id: {id}")
}
/// keyline validation: LF inside the value.
pub fn invalid_value(value: &str) -> String {
    format!("invalid value: {value}")
}
