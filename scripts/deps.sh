#!/usr/bin/env bash
# Installs what the test suite needs. As root it installs missing Debian
# packages; as anyone it installs staticcheck through the Go module proxy.
set -euo pipefail

pkgs=(nftables iptables ipset iproute2 sip-tester sipvicious nmap hping3 procps util-linux time lintian chromium)
# command that proves each package is present
declare -A probe=([nftables]=nft [iptables]=iptables [ipset]=ipset [iproute2]=ip [sip-tester]=sipp
  [sipvicious]=svmap [nmap]=nmap [hping3]=hping3 [procps]=pgrep [util-linux]=unshare [time]=/usr/bin/time [lintian]=lintian [chromium]=chromium)

missing=()
for p in "${pkgs[@]}"; do
  command -v "${probe[$p]}" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "deps: missing ${missing[*]} (run 'make deps' as root to install them); e2e tests will need them"
  fi
fi

sc="$(go env GOPATH)/bin/staticcheck"
if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$sc" ]; then
  echo "deps: installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
