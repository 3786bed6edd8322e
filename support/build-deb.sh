#!/usr/bin/env bash
# `make deb`: builds target/pkg/gitlab-shell-rs_<version>-1_<arch>.deb with dpkg-deb from a tree
# staged by `make install` (docs/packaging.md says why not cargo-deb). Layout: /opt/gitlab-shell
# (bin/, VERSION, config.yml.example, support/setup.sh; the GitLab Shell home, root-owned as sshd
# requires) and the man pages in /usr/share/man. The package creates no user and no config.yml:
# docs/install.md steps 1 and 3.
# Usage: support/build-deb.sh PKG_DIR VERSION DEB_ARCH
set -euo pipefail
cd "$(dirname "$0")/.."
pkg_dir=$1 version=$2 arch=$3
name=gitlab-shell-rs
stage=$pkg_dir/deb/${name}_$version-1_$arch
rm -rf "$stage"
mkdir -p "$stage"
make --no-print-directory install DESTDIR="$PWD/$stage" PREFIX=/opt/gitlab-shell MANDIR=/usr/share/man >/dev/null
gzip -9n "$stage"/usr/share/man/man*/*
install -d "$stage/usr/share/doc/$name" "$stage/DEBIAN"
install -m644 docs/install.md "$stage/usr/share/doc/$name/install.md"
cat >"$stage/usr/share/doc/$name/copyright" <<EOT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: $name
Comment: GitLab Shell's OpenSSH companion binaries, reimplemented in Rust.
EOT
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOT
Package: $name
Version: $version-1
Architecture: $arch
Maintainer: GitLab Shell in Rust maintainers <root@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34)
Recommends: openssh-server
Section: vcs
Priority: optional
Homepage: https://gitlab.com/gitlab-org/gitlab-shell
Description: GitLab Shell for OpenSSH, in Rust (classic mode)
 The programs sshd runs for a GitLab server: gitlab-shell (the forced
 command), gitlab-shell-authorized-keys-check, gitlab-shell-authorized-principals-check,
 gitlab-shell-check and gitlab-shell-authorized-keys, installed in /opt/gitlab-shell.
 See /usr/share/doc/$name/install.md for the user, config.yml and sshd_config.
EOT
# config.yml, the secret link and the logs are the operator's: dpkg never touches them.
find "$stage" -path "$stage/DEBIAN" -prune -o -type f -print0 | xargs -0 chmod go-w
deb=$pkg_dir/${name}_$version-1_$arch.deb
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >/dev/null
echo "$deb"
dpkg-deb --info "$deb" | sed -n 's/^ *\(Package\|Version\|Architecture\|Installed-Size\):/  &/p'
