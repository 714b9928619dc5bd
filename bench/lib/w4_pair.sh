#!/usr/bin/env bash
# W4 driver: starts an echo server (the command given) pinned to
# $W4_SERVER_CPU (default 0), waits for its "READY <port>" line, runs the C
# load generator pinned to $W4_CLIENT_CPU (default 1) against it, stops the
# server, and prints the generator's RESULT line.
#
#   bench/lib/w4_pair.sh CLIENT_BIN SERVER_CMD...
# Environment: W4_CONNS (100), W4_SECONDS (10), W4_SIZE (64).
set -uo pipefail
client=$1
shift
scpu=${W4_SERVER_CPU:-0}
ccpu=${W4_CLIENT_CPU:-1}
pin=()
if command -v taskset >/dev/null; then pin=(taskset -c); fi

out=$(mktemp)
trap 'kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; rm -f "$out"' EXIT
# not through a function: $! must be the server itself (taskset execs it)
"${pin[@]}" ${pin:+"$scpu"} "$@" >"$out" 2>&1 &
spid=$!
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^READY \([0-9]*\).*/\1/p' "$out" | head -1)
  [ -n "$port" ] && break
  kill -0 "$spid" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$port" ]; then
  echo "w4_pair: the server did not start: $(tail -3 "$out" | tr '\n' ' ')" >&2
  exit 1
fi
"${pin[@]}" ${pin:+"$ccpu"} "$client" "$port" "$spid" "${W4_CONNS:-100}" "${W4_SECONDS:-10}" "${W4_SIZE:-64}"
