/**
 * The shell that runs in the guest for workspaces (POSIX sh, git, GNU tar,
 * coreutils: all in the default image). Each script takes the repo directory
 * as $1, so the unit tests run the very same text on the host against a temp
 * directory. Commands are built with shellJoin: every value is one quoted
 * argument, nothing is interpolated into the script text.
 */
import { shellJoin } from '../model/quote.js';

/** Where a prepared workspace lives in the guest (on the /root work disk). */
export const GUEST_REPO = '/root/repo';

/** Exit status the scripts use for "no prepared workspace there". */
export const NO_WORKSPACE_EXIT = 3;
/** Exit status for a bad --base-commit. */
export const BAD_BASE_EXIT = 4;
/** Exit status of apply when the pack left out a base the guest does not have (resend everything). */
export const BASE_MISSING_EXIT = 5;

/**
 * Reads "<pack bytes><tar bytes>" on stdin. Order matters: objects first
 * (so the deletions can diff the old and new prepared trees), then removal
 * of files the previous prepare sent and this one does not, then the files,
 * then refs and the index. A path is only removed when its parent resolves
 * inside the repo, so a symlink made in the guest cannot redirect it.
 */
const APPLY = `set -eu
repo=$1 packbytes=$2 commit=$3 itree=$4 head=$5 branch=$6 shallow=$7 base=$8
mkdir -p "$repo"
cd "$repo"
[ -d .git ] || git init -q
realrepo=$(pwd -P)
if [ "$base" != - ] && ! git cat-file -e "$base^{commit}" 2>/dev/null; then
  cat >/dev/null
  exit ${BASE_MISSING_EXIT}
fi
head -c "$packbytes" | git index-pack --stdin >/dev/null
if [ "$shallow" != - ]; then printf '%s\\n' $shallow > .git/shallow; fi
if old=$(git rev-parse -q --verify 'refs/banger/prepared^{commit}'); then
  git diff-tree -r -z --name-only --no-renames --diff-filter=D "$old" "$commit" |
    xargs -0 -r sh -c 'r=$0; for p; do d=$(realpath -m -- "$(dirname -- "$p")"); case "$d/" in "$r"/*) rm -f -- "$p"; rmdir -p --ignore-fail-on-non-empty -- "$(dirname -- "$p")" 2>/dev/null || true;; esac; done' "$realrepo"
fi
tar -x -z --no-same-owner -f -
git update-ref refs/banger/prepared "$commit"
if [ "$head" != - ]; then
  if [ "$branch" != - ]; then
    git update-ref "refs/heads/$branch" "$head"
    git symbolic-ref HEAD "refs/heads/$branch"
  else
    git update-ref --no-deref HEAD "$head"
  fi
elif [ "$branch" != - ]; then
  git symbolic-ref HEAD "refs/heads/$branch"
fi
# -m keeps the stat data of entries that did not change, so the refresh
# below re-hashes only what the archive replaced.
if [ "$itree" != - ]; then git read-tree -m "$itree" 2>/dev/null || git read-tree "$itree"
elif [ "$head" != - ]; then git read-tree -m "$head" 2>/dev/null || git read-tree "$head"
else git read-tree --empty
fi
git update-index -q --refresh >/dev/null 2>&1 || true
sync
`;

export interface ApplyArgs {
  repo: string;
  packBytes: number;
  commit: string;
  indexTree: string | null;
  head: string | null;
  branch: string | null;
  shallow: string[];
  /** A commit the pack assumes the guest has (with its history), or null. */
  base: string | null;
}

/** argv of the apply script (the unit tests run it locally; the guest gets applyCommand). */
export function applyArgv(a: ApplyArgs): string[] {
  return [
    'sh', '-c', APPLY, 'banger-workspace',
    a.repo, String(a.packBytes), a.commit, a.indexTree ?? '-', a.head ?? '-', a.branch ?? '-',
    a.shallow.length ? a.shallow.join(' ') : '-', a.base ?? '-',
  ];
}

export function applyCommand(a: ApplyArgs): string {
  return shellJoin(applyArgv(a));
}

/**
 * Prints the host commit the last prepare was based on (the parent of the
 * prepared commit), or an empty line: the guest has that history, so a
 * resync sends only newer objects. With "list" as $2 it then prints
 * `git ls-files -s -z` of the guest's work tree as it is now (read through a
 * throwaway index in the git dir, so the guest's own index is untouched):
 * the delta mode sends only the files whose content or mode differs.
 */
const PROBE = `cd "$1" 2>/dev/null || { echo; exit 0; }
git rev-parse -q --verify 'refs/banger/prepared^1' 2>/dev/null || echo
[ "$2" = list ] && git rev-parse -q --verify 'refs/banger/prepared^{commit}' >/dev/null 2>&1 || exit 0
gd=$(git rev-parse --git-dir)
tmp="$gd/banger-probe-$$.index"
trap 'rm -f "$tmp" "$tmp.lock"' EXIT
if [ -f "$gd/index" ]; then cp "$gd/index" "$tmp"; fi
GIT_INDEX_FILE=$tmp git add -A >/dev/null 2>&1
GIT_INDEX_FILE=$tmp git ls-files -s -z
`;

export function probeArgv(repo: string, list = false): string[] {
  return ['sh', '-c', PROBE, 'banger-workspace', repo, list ? 'list' : '-'];
}

export function probeCommand(repo: string, list = false): string {
  return shellJoin(probeArgv(repo, list));
}

/** What the probe printed: the base commit and, when listed, the guest's files (path → "mode sha"). */
export function parseProbe(out: Buffer): { have: string | null; guestFiles: Map<string, string> | null } {
  const nl = out.indexOf(10);
  const first = (nl < 0 ? out : out.subarray(0, nl)).toString('utf8').trim();
  const rest = nl < 0 ? Buffer.alloc(0) : out.subarray(nl + 1);
  const have = /^[0-9a-f]{40,64}$/.test(first) ? first : null;
  if (rest.length === 0) return { have, guestFiles: null };
  const guestFiles = new Map<string, string>();
  for (const rec of rest.toString('utf8').split('\0')) {
    // "<mode> <sha> <stage>\t<path>"
    const tab = rec.indexOf('\t');
    if (tab < 0) continue;
    const [mode, sha] = rec.slice(0, tab).split(' ');
    guestFiles.set(rec.slice(tab + 1), `${mode} ${sha}`);
  }
  return { have, guestFiles };
}

/**
 * The guest's changes as a patch on stdout. The work tree is read through a
 * throwaway index kept inside the git dir (the seeds: an index on another
 * filesystem makes git fail to write it), so the guest's own index and
 * files are never touched. Without a base: one diff from the prepared tree.
 * With one: format-patch of base..HEAD, plus a commit of what is not
 * committed yet, so `git am` replays the guest's commits and then its edits.
 */
const EXPORT = `set -eu
repo=$1 base=$2
cd "$repo" 2>/dev/null || { echo "there is no workspace at $repo" >&2; exit ${NO_WORKSPACE_EXIT}; }
prepared=$(git rev-parse -q --verify 'refs/banger/prepared^{commit}') || { echo "$repo was not prepared by banger (no refs/banger/prepared)" >&2; exit ${NO_WORKSPACE_EXIT}; }
gd=$(git rev-parse --git-dir)
tmp="$gd/banger-export-$$.index"
trap 'rm -f "$tmp" "$tmp.lock"' EXIT
if [ -f "$gd/index" ]; then cp "$gd/index" "$tmp"; fi
GIT_INDEX_FILE=$tmp git add -A
work=$(GIT_INDEX_FILE=$tmp git write-tree)
if [ "$base" = - ]; then
  exec git diff --binary --full-index --no-color --no-ext-diff --no-textconv "$prepared" "$work" --
fi
git cat-file -e "$base^{commit}" 2>/dev/null || { echo "base commit $base is not in the guest's history" >&2; exit ${BAD_BASE_EXIT}; }
git merge-base --is-ancestor "$base" HEAD || { echo "base commit $base is not an ancestor of the guest's HEAD" >&2; exit ${BAD_BASE_EXIT}; }
tip=$(git rev-parse HEAD)
if [ "$work" != "$(git rev-parse 'HEAD^{tree}')" ]; then
  tip=$(GIT_AUTHOR_NAME=banger GIT_AUTHOR_EMAIL=banger@localhost GIT_COMMITTER_NAME=banger GIT_COMMITTER_EMAIL=banger@localhost \\
    git commit-tree "$work" -p HEAD -m 'banger: changes not committed in the guest')
fi
exec git format-patch --stdout --binary --full-index --no-color --no-signature "$base..$tip"
`;

export function exportArgv(repo: string, baseCommit: string | null): string[] {
  return ['sh', '-c', EXPORT, 'banger-workspace', repo, baseCommit ?? '-'];
}

export function exportCommand(repo: string, baseCommit: string | null): string {
  return shellJoin(exportArgv(repo, baseCommit));
}
