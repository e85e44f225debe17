#!/usr/bin/env bash
# Installs what banger needs on Debian/Ubuntu, idempotently:
#   apt packages (with sudo when not root), npm dependencies, the TypeScript build.
# Usage: scripts/setup.sh [--test]   (--test adds the packages the test suite needs)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

pkgs=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs openssh-client ca-certificates iproute2 git tar)
# Test peers: a real sshd and a real qemu-guest-agent for unit tests of the SSH and agent clients;
# iptables for the root helper's tests and bridge scenarios; systemd for `systemd-analyze verify` of the units.
[ "$want_test" = 1 ] && pkgs+=(openssh-server qemu-guest-agent iptables systemd skopeo docker-registry zstd)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then missing+=("$p"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n);
  elif command -v sudo >/dev/null && [ -t 0 ]; then sudo=(sudo);
  else
    echo "setup: cannot install packages without root. Run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

command -v node >/dev/null || { echo "setup: Node.js 20+ is required (apt-get install nodejs npm)" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "setup: Node.js 20+ is required, found $(node --version)" >&2; exit 1; }

# better-sqlite3 builds from source here; it needs Node's headers (in /usr/include/node on Debian).
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ]; then export npm_config_nodedir=/usr; fi

stamp=node_modules/.banger-installed
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  echo "setup: installing npm dependencies (better-sqlite3 compiles from source: ~2 min the first time)" >&2
  npm ci --no-audit --no-fund >&2
  node -e "require('better-sqlite3')(':memory:')" 2>/dev/null || { echo "setup: better-sqlite3 did not build (see above)" >&2; exit 1; }
  touch "$stamp"
fi

if [ ! -f dist/.built ] || [ -n "$(find src test package.json tsconfig.json -newer dist/.built -print -quit 2>/dev/null)" ]; then
  echo "setup: building" >&2
  npx tsc -p tsconfig.json >&2
  touch dist/.built
fi
