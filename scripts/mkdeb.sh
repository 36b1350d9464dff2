#!/usr/bin/env bash
# Builds dist/pbxguard_<version>_<arch>.deb with dpkg-deb from a static
# binary built here: /usr/sbin/pbxguard, both systemd units, the sample
# configuration as a conffile (0600), the docs, man pages and completions
# generated from the command tree, and the maintainer scripts in
# deploy/debian/. No download: Go modules come from the module cache/proxy
# like any build.
#
#   scripts/mkdeb.sh [VERSION] [ARCH]     (defaults: scripts/version.sh, the Go arch)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-$(scripts/version.sh)}"
arch="${2:-$(go env GOARCH)}"
command -v dpkg-deb >/dev/null || { echo "mkdeb: dpkg-deb not found (apt-get install dpkg)" >&2; exit 3; }

out="${PBXGUARD_DEB_OUT:-dist}"
root="$(mktemp -d)"
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$out"

commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
date="$(git show -s --format=%cI HEAD 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
pkgpath=github.com/pbxguard/pbxguard/internal/version
CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath \
  -ldflags "-s -w -X $pkgpath.version=$version -X $pkgpath.commit=$commit -X $pkgpath.date=$date" \
  -o "$root/usr/sbin/pbxguard" ./cmd/pbxguard

# Generated from the command tree by a binary that runs here (the packaged
# one when the package is for this machine's architecture).
host="$(mktemp -d)"
if [ "$arch" = "$(go env GOHOSTARCH)" ]; then
  cp "$root/usr/sbin/pbxguard" "$host/pbxguard"
else
  CGO_ENABLED=0 go build -trimpath -ldflags "-X $pkgpath.version=$version -X $pkgpath.date=$date" -o "$host/pbxguard" ./cmd/pbxguard
fi
"$host/pbxguard" generate man "$root/usr/share/man/man8"
gzip -9n "$root"/usr/share/man/man8/*.8
"$host/pbxguard" generate completions "$host/comp"
install -D -m 0644 "$host/comp/bash/pbxguard" "$root/usr/share/bash-completion/completions/pbxguard"
install -D -m 0644 "$host/comp/zsh/_pbxguard" "$root/usr/share/zsh/vendor-completions/_pbxguard"
install -D -m 0644 "$host/comp/fish/pbxguard.fish" "$root/usr/share/fish/vendor_completions.d/pbxguard.fish"
rm -rf "$host"

# Units: the packaged binary is /usr/sbin/pbxguard.
for u in pbxguard.service pbxguard-policy.service; do
  install -D -m 0644 "deploy/$u" "$root/lib/systemd/system/$u"
  sed -i 's#/usr/local/bin/pbxguard#/usr/sbin/pbxguard#g' "$root/lib/systemd/system/$u"
done
install -D -m 0600 deploy/pbxguard.yaml "$root/etc/pbxguard/pbxguard.yaml"

doc="$root/usr/share/doc/pbxguard"
install -d "$doc"
install -m 0644 README.md docs/*.md "$doc/"
install -m 0644 deploy/debian/copyright "$doc/copyright"
printf 'pbxguard (%s) unstable; urgency=medium\n\n  * Build of commit %s.\n\n -- pbxguard maintainers <maintainers@pbxguard.invalid>  %s\n' \
  "$version" "$commit" "$(date -u -R -d "$date" 2>/dev/null || date -u -R)" | gzip -9n > "$doc/changelog.gz"

# Deliberate departures from lintian's defaults, each with its reason.
install -D -m 0644 deploy/debian/lintian-overrides "$root/usr/share/lintian/overrides/pbxguard"

install -d "$root/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "deploy/debian/$s" "$root/DEBIAN/$s"; done
echo /etc/pbxguard/pbxguard.yaml > "$root/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat > "$root/DEBIAN/control" <<CTL
Package: pbxguard
Version: $version
Architecture: $arch
Maintainer: pbxguard maintainers <maintainers@pbxguard.invalid>
Installed-Size: $size
Recommends: nftables
Suggests: ipset, iptables, asterisk
Section: net
Priority: optional
Homepage: https://github.com/pbxguard/pbxguard
Description: protect an Asterisk PBX: ban attackers, harden, stop toll fraud
 pbxguard follows Asterisk's logs (chan_sip, pjsip, the security log, IAX2,
 AMI) and sshd, and bans attacking addresses in the kernel (nftables over
 netlink, ipset, iptables) with bans that survive restarts and an allowlist
 that wins over everything. It applies a default-deny firewall policy
 without locking the administrator out, watches calls over AMI and CDR to
 contain toll fraud within seconds, and audits the Asterisk configuration.
CTL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | sort | xargs md5sum) > "$root/DEBIAN/md5sums"
deb="$out/pbxguard_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
