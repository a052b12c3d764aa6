#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a fresh Debian 12
# machine: the Debian packages listed in scripts/deps/*.txt (one name a line,
# '#' comments) and the Go modules of go.mod. Idempotent and quiet when
# everything is already there.
#
#   install-deps.sh              every list (the tests)
#   install-deps.sh base demo    only those lists (the demo)
#
# Packages are installed without starting their system services (Debian's
# PostgreSQL, MariaDB, Postfix and Dovecot would otherwise start instances
# that nothing here uses): tests and the demo start their own.
set -euo pipefail
cd "$(dirname "$0")/.."

lists=()
if [ "$#" -eq 0 ]; then
  lists=(scripts/deps/*.txt)
else
  for l in "$@"; do
    [ -e "scripts/deps/$l.txt" ] || { echo "install-deps: no list scripts/deps/$l.txt" >&2; exit 2; }
    lists+=("scripts/deps/$l.txt")
  done
fi

pkgs=()
for f in "${lists[@]}"; do
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
  # invoke-rc.d asks policy-rc.d whether to start a service; 101 means no.
  # One already there (containers ship one) is left as it is.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# lockstep install-deps: no service starts during its apt-get install\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 0755 "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's postgresql package creates a cluster (15/main) on install; the
# tests and the demo make their own on private sockets and never use it.
go mod download
