#!/usr/bin/env bash
# Installs the named Debian packages that are missing, when we are root and apt-get exists.
# Without root the tests that need a missing package skip (or, with CI=true, fail) and say why.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "podnet: not root, cannot install: ${missing[*]} (tests that need them will say so)" >&2
  exit 0
fi
echo "podnet: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
