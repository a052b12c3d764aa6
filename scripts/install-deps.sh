#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a fresh Debian 12
# machine: the Debian packages listed in scripts/deps/*.txt (one name a line,
# '#' comments) and the Go modules of go.mod. Idempotent and quiet when
# everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=()
for f in scripts/deps/*.txt; do
  [ -e "$f" ] || continue
  while read -r p _; do
    case "$p" in ''|'#'*) continue ;; esac
    pkgs+=("$p")
  done <"$f"
done

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  # Debconf answers (postfix: "No configuration") before the packages ask.
  for h in scripts/deps/*.preinst.sh; do
    if [ -e "$h" ]; then $SUDO sh "$h"; fi
  done
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's postgresql packages start a cluster on install; the tests start
# their own servers on private ports and never use it.
go mod download
