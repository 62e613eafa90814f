#!/usr/bin/env bash
# Install the Debian packages named on the command line that are missing (apt-get, as root only).
# Not root: print the exact sudo command and fail.  Nothing missing: return at once without apt-get.
set -euo pipefail

installed=$(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null | awk '/ install ok installed$/ { print $1 }' || true)
missing=()
for pkg in "$@"; do
    grep -qxF "$pkg" <<<"$installed" || missing+=("$pkg")
done
((${#missing[@]})) || exit 0

if ((EUID != 0)); then
    echo "ringtgt: missing system packages; run:" >&2
    echo "    sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "ringtgt: installing ${missing[*]}" >&2
apt-get install -y --no-install-recommends "${missing[@]}" ||
    { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
