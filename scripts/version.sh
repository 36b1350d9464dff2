#!/usr/bin/env bash
# Prints the version to build: the tag (without "v") when HEAD is tagged,
# else 0.1.0~git<commit date>.<short commit> (a Debian version that sorts
# before the 0.1.0 release and after every older snapshot).
set -euo pipefail
cd "$(dirname "$0")/.."
if tag=$(git describe --tags --exact-match 2>/dev/null); then
  echo "${tag#v}"
elif sha=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  echo "0.1.0~git$(git show -s --format=%cd --date=format:%Y%m%d%H%M%S HEAD).${sha}"
else
  echo "0.1.0~dev"
fi
