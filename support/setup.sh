#!/usr/bin/env bash
# Prepares a GitLab Shell home (the folder holding bin/ and config.yml), as GitLab Shell's
# `make setup` / support/make_necessary_dirs does, and never overwrites an existing file:
#   - config.yml: copied from config.yml.example (mode 0640) only when missing;
#   - the shared secret (secret_file, default .gitlab_shell_secret): generated (32 hex digits) only
#     when missing and no inline `secret:` is configured; its mode is always set to 0600;
#   - the log folder (folder of log_file, default the home): created (0755) when missing;
#   - the key folder (folder of auth_file, default ~/.ssh): created when missing and set to 0700;
#     the auth_file itself is created empty (0600) when missing, else only chmod 0600.
# Usage: support/setup.sh [HOME_DIR]   (default: the folder above this script)
# `make setup GITLAB_SHELL_DIR=/home/git/gitlab-shell` runs it.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
home_dir="${1:-$here}"
example="${CONFIG_EXAMPLE:-$here/config.yml.example}"

say() { echo "setup: $*"; }

mkdir -p "$home_dir"
home_dir="$(cd "$home_dir" && pwd)"
config="$home_dir/config.yml"

if [[ -e "$config" ]]; then
  say "keeping $config"
else
  install -m 0640 "$example" "$config"
  say "created $config from $(basename "$example")"
fi

# The value of a top-level `key: value` line of config.yml (quotes stripped; empty when the key
# is absent or commented out). Nested keys are not needed here.
setting() {
  sed -n -E "s/^$1:[[:space:]]*(.*)$/\\1/p" "$config" | tail -n 1 |
    sed -E -e 's/[[:space:]]+#.*$//' -e 's/[[:space:]]+$//' -e 's/^"(.*)"$/\1/' -e "s/^'(.*)'$/\\1/"
}

# Resolves a configured path like GitLab Shell does: absolute as is, `~/…` against $HOME,
# anything else relative to the home folder.
resolve() {
  case "$1" in
    /*) echo "$1" ;;
    "~") echo "$HOME" ;;
    "~/"*) echo "$HOME/${1#\~/}" ;;
    *) echo "$home_dir/$1" ;;
  esac
}

# Shared secret.
if [[ -n "$(setting secret)" ]]; then
  say "secret is set inline in config.yml; no secret file needed"
else
  secret_file="$(resolve "$(setting secret_file)")"
  [[ -n "$(setting secret_file)" ]] || secret_file="$home_dir/.gitlab_shell_secret"
  if [[ -e "$secret_file" ]]; then
    say "keeping $secret_file"
  else
    mkdir -p "$(dirname "$secret_file")"
    (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$secret_file")
    say "generated $secret_file"
  fi
  chmod 0600 "$secret_file"
fi

# Log folder.
log_file="$(setting log_file)"
log_file="$(resolve "${log_file:-gitlab-shell.log}")"
log_dir="$(dirname "$log_file")"
if [[ ! -d "$log_dir" ]]; then
  install -d -m 0755 "$log_dir"
  say "created log folder $log_dir"
fi

# Key folder and authorized_keys file.
auth_file="$(setting auth_file)"
auth_file="$(resolve "${auth_file:-~/.ssh/authorized_keys}")"
key_dir="$(dirname "$auth_file")"
if [[ ! -d "$key_dir" ]]; then
  install -d -m 0700 "$key_dir"
  say "created key folder $key_dir"
fi
chmod 0700 "$key_dir"
if [[ ! -e "$auth_file" ]]; then
  (umask 077 && : >"$auth_file")
  say "created $auth_file"
fi
chmod 0600 "$auth_file"
say "done: $home_dir"
