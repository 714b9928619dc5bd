#!/usr/bin/env bash
# Build and install lunio with `luarocks make` into a throwaway tree, then
# smoke-test the installed modules and the lunio command from that tree.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

rockspec=rockspec/lunio-scm-1.rockspec
luarocks=(luarocks --lua-version=5.4)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lunio-rock.XXXXXX")
cleanup() {
  rm -rf "$tmp"
  # The builtin backend leaves src/*.o and lunio/core.so in the work tree.
  rm -f "$root"/src/*.o "$root/lunio/core.so"
  rmdir "$root/lunio" 2>/dev/null || true
}
trap cleanup EXIT

fail() { echo "check-rock: $*" >&2; exit 1; }

# Debian keeps curl/curl.h under the multiarch include directory, which
# luarocks does not search; tell it where the header is when needed.
vars=()
if [[ ! -e /usr/include/curl/curl.h && ! -e /usr/local/include/curl/curl.h ]]
then
  for dir in "/usr/include/$(gcc -print-multiarch 2>/dev/null)" \
    $(pkg-config --cflags-only-I libcurl 2>/dev/null | sed 's/-I//g'); do
    if [[ -e $dir/curl/curl.h ]]; then vars+=("LIBCURL_INCDIR=$dir"); break; fi
  done
fi

"${luarocks[@]}" make "$rockspec" --tree="$tmp/tree" "${vars[@]}" \
  >"$tmp/make.log" 2>&1 ||
  { cat "$tmp/make.log" >&2; fail "luarocks make failed"; }

# The tree's paths come first; running from $tmp keeps ./?.lua and ./?.so
# from finding the repository's files instead of the installed ones.
eval "$("${luarocks[@]}" --tree="$tmp/tree" path)"
unset LUA_PATH_5_4 LUA_CPATH_5_4 LUNIO_BUILD_DIR
cd "$tmp"
out=$(lua5.4 -e '
  local lunio = require "lunio"
  print(lunio.run(function() lunio.sleep(0.01); return 42 end))') ||
  fail "running lunio from the tree failed"
[[ $out == 42 ]] || fail "lunio.run printed '$out', want 42"

out=$("$tmp/tree/bin/lunio" -e 'print(1+1)') || fail "bin/lunio failed"
[[ $out == 2 ]] || fail "lunio -e printed '$out', want 2"

echo "check-rock: ok"
