#!/usr/bin/env bash
# `make test` installs only the build and test groups of scripts/deps.sh, so
# every program the specs run must come from those. A program counts as run
# when its name is a word on a non-comment line of spec/ or of
# scripts/nginx-fixture (which the HTTP specs start). Programs of Debian's
# essential packages (sh, cat, env, kill, timeout, ...) are always there and
# not listed below; add a program here when a spec starts running it.
set -euo pipefail
cd "$(dirname "$0")/.."

# program -> the Debian package that installs it
declare -A provider=(
  [python3]=python3-minimal [nginx]=nginx-light [openssl]=openssl
  [curl]=curl [tmux]=tmux [git]=git [luarocks]=luarocks [busted]=lua-busted
  [cmake]=cmake [valgrind]=valgrind [wrk]=wrk [hyperfine]=hyperfine
)

declare -A in_group=()
for p in $(scripts/deps.sh --list build test); do in_group[$p]=1; done

files=(spec scripts/nginx-fixture)
used=() bad=()
for prog in $(printf '%s\n' "${!provider[@]}" | sort); do
  # -w: /usr/bin/python3 counts, novalgrind does not.
  where=$(grep -rnwI -- "$prog" "${files[@]}" |
    grep -vE '^[^:]+:[0-9]+:[[:space:]]*(--|#)' | head -n 1 | cut -d: -f1-2) ||
    true
  [[ -n $where ]] || continue
  used+=("$prog")
  pkg=${provider[$prog]}
  if [[ -z ${in_group[$pkg]:-} ]]; then
    bad+=("$where runs $prog (package $pkg), which is not in the test group")
  fi
done

if ((${#bad[@]})); then
  printf 'check-spec-deps: %s\n' "${bad[@]}" >&2
  echo "check-spec-deps: add the packages to the test group in" \
    "scripts/deps.sh, or tag such specs and exclude them" >&2
  exit 1
fi
echo "check-spec-deps: spec/ names ${used[*]:-none of the listed programs};" \
  "all come from the test group"
