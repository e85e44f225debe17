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
# openssl: the verification module is tested against signatures openssl makes.
[ "$want_test" = 1 ] && pkgs+=(openssh-server qemu-guest-agent iptables systemd skopeo docker-registry zstd openssl)

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

# Supported: Node.js ^20.19 || ^22.13 || ^24 || ^26 (package.json "engines"); CI proves 24, from scripts/node24.sh.
# scripts/banger and scripts/test put that Node 24 first on PATH when the node here is older than 22.
command -v node >/dev/null || { echo "setup: Node.js 24 is required: run scripts/banger or scripts/test, which fetch it with npm (apt-get install npm), or install it yourself" >&2; exit 1; }
node_info=$(node -p 'process.versions.node + " " + process.versions.modules + " " + process.execPath')
read -r node_version node_abi node_exe <<<"$node_info"
IFS=. read -r major minor _ <<<"$node_version"
if [ "$major" = 24 ] || [ "$major" = 26 ] || { [ "$major" = 22 ] && [ "$minor" -ge 13 ]; } || { [ "$major" = 20 ] && [ "$minor" -ge 19 ]; }; then
  :
elif [ "$major" -gt 24 ]; then
  # 25 and 27+: not in "engines" (better-sqlite3 lists majors up to 26), but likely to work.
  echo "setup: warning: banger is not tested on Node.js v$node_version ($node_exe); BANGER_NODE=24 uses the Node 24 it is proven on" >&2
else
  echo "setup: banger needs Node.js ^20.19, ^22.13, 24 or 26 (24 is the one CI proves); $node_exe is v$node_version." >&2
  echo "setup: BANGER_NODE=24 scripts/banger ... fetches Node 24 with npm (see scripts/node24.sh)" >&2
  exit 1
fi

# better-sqlite3 builds from source here, against the headers of the node that runs it:
# <its prefix>/include/node (/usr on Debian, the dir scripts/node24.sh unpacked, nvm's, a nodejs.org tarball's).
node_prefix=$(dirname "$(dirname "$node_exe")")
if [ -f "$node_prefix/include/node/common.gypi" ]; then export npm_config_nodedir="$node_prefix"; fi

# The stamp holds the module ABI node_modules was built for: another node major rebuilds it.
stamp=node_modules/.banger-installed
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ] || [ "$(cat "$stamp")" != "abi $node_abi" ]; then
  echo "setup: installing npm dependencies for Node v$node_version (better-sqlite3 compiles from source: ~2 min)" >&2
  npm ci --no-audit --no-fund >&2
  node -e "require('better-sqlite3')(':memory:')" || { echo "setup: better-sqlite3 did not build for Node v$node_version (see above)" >&2; exit 1; }
  echo "abi $node_abi" >"$stamp"
fi

if [ ! -f dist/.built ] || [ -n "$(find src test package.json tsconfig.json rolldown.config.js scripts/bundle-cli.mjs -newer dist/.built -print -quit 2>/dev/null)" ]; then
  echo "setup: building" >&2
  npm run --silent build >&2
  touch dist/.built
fi
