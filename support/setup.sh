#!/usr/bin/env bash
# Prepares a GitLab Shell home (the folder holding bin/ and config.yml) for the user sshd runs
# GitLab Shell as, and never overwrites an existing file (docs/install.md, docs/operating.md):
#   - config.yml: copied from config.yml.example only when missing: mode 0640, group of the user
#     (so the user can read it, but not change it, when root runs this);
#   - the shared secret (secret_file, default .gitlab_shell_secret): GitLab writes it, so it is
#     NOT generated unless GITLAB_SHELL_NEW_SECRET=1 (a trial without GitLab). An existing regular
#     file is made readable by the user (0600 when the user owns it, else 0640 with the user's
#     group); a symlink (GitLab's own file, linked) is left alone;
#   - the log folder (folder of log_file): created when missing and owned by the user (mode 0755);
#   - the key folder (folder of auth_file, default ~/.ssh, `~` being the USER's home): created
#     when missing, owned by the user, mode 0700; auth_file is created empty (0600) when missing,
#     else only chmod 0600.
# Usage: GITLAB_SHELL_USER=git support/setup.sh [HOME_DIR]   (default: the folder above this script)
# `make setup GITLAB_SHELL_DIR=/opt/gitlab-shell GITLAB_SHELL_USER=git` runs it. As root it needs
# GITLAB_SHELL_USER (it would otherwise prepare root's own ~/.ssh); as another user, that user is
# the default and `~` is $HOME.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
home_dir="${1:-$here}"
example="${CONFIG_EXAMPLE:-$here/config.yml.example}"

say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

me="$(id -un)"
user="${GITLAB_SHELL_USER:-}"
if [[ -z $user ]]; then
  [[ $(id -u) != 0 ]] || die "run as root, say for which user: make setup GITLAB_SHELL_USER=git"
  user="$me"
  user_home="$HOME"
else
  entry="$(getent passwd "$user")" || die "no such user: $user (create it first: docs/install.md)"
  user_home="$(cut -d: -f6 <<<"$entry")"
  [[ $user == "$me" || $(id -u) == 0 ]] || die "only root can prepare a home for $user"
fi
group="$(id -gn "$user")"
as_root=0
[[ $(id -u) == 0 ]] && as_root=1
# chown only when root (a non-root user already owns what it creates).
own() { if ((as_root)); then chown "$1" "${@:2}"; fi; }

mkdir -p "$home_dir"
home_dir="$(cd "$home_dir" && pwd)"
config="$home_dir/config.yml"

if [[ -e "$config" ]]; then
  say "keeping $config"
else
  install -m 0640 "$example" "$config"
  own "root:$group" "$config"
  say "created $config from $(basename "$example") (mode 0640, group $group)"
fi

# The value of a top-level `key: value` line of config.yml (quotes stripped; empty when the key
# is absent or commented out). Nested keys are not needed here.
setting() {
  sed -n -E "s/^$1:[[:space:]]*(.*)$/\\1/p" "$config" | tail -n 1 |
    sed -E -e 's/[[:space:]]+#.*$//' -e 's/[[:space:]]+$//' -e 's/^"(.*)"$/\1/' -e "s/^'(.*)'$/\\1/"
}

# Resolves a configured path like GitLab Shell does when run as the user: absolute as is, `~/…`
# against the user's home, anything else relative to the GitLab Shell home.
resolve() {
  case "$1" in
    /*) echo "$1" ;;
    "~") echo "$user_home" ;;
    "~/"*) echo "$user_home/${1#\~/}" ;;
    *) echo "$home_dir/$1" ;;
  esac
}

# Shared secret.
if [[ -n "$(setting secret)" ]]; then
  say "secret is set inline in config.yml; no secret file needed"
else
  secret_file="$(resolve "$(setting secret_file)")"
  [[ -n "$(setting secret_file)" ]] || secret_file="$home_dir/.gitlab_shell_secret"
  if [[ -L "$secret_file" ]]; then
    say "keeping the link $secret_file -> $(readlink "$secret_file")"
  elif [[ -e "$secret_file" ]]; then
    if [[ $(stat -c %U "$secret_file") == "$user" ]]; then
      chmod 0600 "$secret_file"
    else
      own "root:$group" "$secret_file"
      chmod 0640 "$secret_file"
    fi
    say "keeping $secret_file"
  elif [[ ${GITLAB_SHELL_NEW_SECRET:-} == 1 ]]; then
    mkdir -p "$(dirname "$secret_file")"
    (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$secret_file")
    own "$user:$group" "$secret_file"
    say "generated $secret_file (GITLAB_SHELL_NEW_SECRET=1)"
  else
    say "no secret at $secret_file: link GitLab's .gitlab_shell_secret there or name it in"
    say "  secret_file (docs/install.md); GITLAB_SHELL_NEW_SECRET=1 generates one for a trial"
  fi
fi

# Log folder, owned by the user (the binaries run as the user and append to log_file).
log_file="$(setting log_file)"
log_file="$(resolve "${log_file:-gitlab-shell.log}")"
log_dir="$(dirname "$log_file")"
if [[ ! -d "$log_dir" ]]; then
  install -d -m 0755 "$log_dir"
  own "$user:$group" "$log_dir"
  say "created log folder $log_dir (owner $user)"
elif [[ $log_dir != "$home_dir" ]]; then
  own "$user:$group" "$log_dir"
fi

# Key folder and authorized_keys file, in the user's home.
auth_file="$(setting auth_file)"
auth_file="$(resolve "${auth_file:-~/.ssh/authorized_keys}")"
key_dir="$(dirname "$auth_file")"
if [[ ! -d "$key_dir" ]]; then
  install -d -m 0700 "$key_dir"
  own "$user:$group" "$key_dir"
  say "created key folder $key_dir"
fi
chmod 0700 "$key_dir"
if [[ ! -e "$auth_file" ]]; then
  (umask 077 && : >"$auth_file")
  own "$user:$group" "$auth_file"
  say "created $auth_file"
fi
chmod 0600 "$auth_file"
say "done: $home_dir for user $user"
