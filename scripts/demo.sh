#!/usr/bin/env bash
# HTTP demo: start the nginx fixture in a temporary directory, fetch 2,000
# small files plus some 1 MiB ones through examples/fetch_many.lua (64 in
# flight, one Session), print the summary, stop the server.
#
#   scripts/demo.sh [N_SMALL [N_LARGE [LIMIT]]]
#
# Needs a build of lunio.core in build/ (cmake -S . -B build &&
# cmake --build build) and nginx with the echo module (scripts/deps.sh).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
small=${1:-2000}
large=${2:-50}
limit=${3:-64}

if [ ! -f "$root/build/lunio/core.so" ]; then
  echo "demo: build/lunio/core.so is missing; run: cmake -S . -B build && cmake --build build" >&2
  exit 1
fi

dir=$(mktemp -d /tmp/lunio-demo.XXXXXX)
cleanup() {
  "$root/scripts/nginx-fixture" stop "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

NGINX_FIXTURE_ACCESS_LOG=off "$root/scripts/nginx-fixture" start "$dir" >/dev/null
port=$(lua5.4 -e "print(dofile('$dir/fixture.lua').http)")
base="http://127.0.0.1:$port"

export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;"
export LUA_CPATH="$root/build/?.so;;"

echo "demo: nginx on $base; $small x /small.txt + $large x /large.bin, $limit in flight"
lua5.4 "$root/examples/fetch_many.lua" -c "$limit" --base "$base" \
  --path "/small.txt:$small" --path "/large.bin:$large"
