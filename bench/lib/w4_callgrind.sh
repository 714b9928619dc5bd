#!/usr/bin/env bash
# User-space instructions per W4 round trip of one echo server, counted by
# callgrind (steadier than CPU time on a shared machine): runs the server
# under valgrind with instrumentation off, drives it with the W4 load
# generator, counts instructions for 3 s in the middle, and divides by the
# number of read calls (one per received message) in that window.
#
#   bench/lib/w4_callgrind.sh SERVER_CMD...
#   e.g. bench/lib/w4_callgrind.sh lua5.4 bench/lunio/w4.lua
# Needs valgrind and bench/.build/w4_client (made by bench/run). asyncio's
# own loop reads with recv instead of read: set W4_READ_FN=recv for it.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
export LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" LUA_CPATH="$PWD/build/?.so;;"
tmp=$(mktemp -d)
trap 'kill "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT
valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$tmp/cg.out" "$@" >"$tmp/server.out" 2>&1 &
spid=$!
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^READY \([0-9]*\).*/\1/p' "$tmp/server.out" | head -1)
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "w4_callgrind: the server did not start" >&2; exit 1; }
bench/.build/w4_client "$port" "$spid" 100 6 >/dev/null &
cpid=$!
sleep 2
callgrind_control -i on "$spid" >/dev/null 2>&1
sleep 3
callgrind_control -i off "$spid" >/dev/null 2>&1
callgrind_control -d "$spid" >/dev/null 2>&1
wait "$cpid"
out=$(ls -S "$tmp"/cg.out* | head -1)
total=$(callgrind_annotate "$out" 2>/dev/null |
  sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
# the calls= lines that follow a cfn= naming the read function
calls=$(lua5.4 - "${W4_READ_FN:-read}" "$out" <<'LUA'
local fn, names, cur, n = arg[1], {}, nil, 0
for line in io.lines(arg[2]) do
  local kind, id, name = line:match("^(c?fn)=%((%d+)%) ?(.*)$")
  if kind then
    if name ~= "" then names[id] = name end
    if kind == "cfn" then cur = names[id] end
  else
    local c = line:match("^calls=(%d+)")
    if c and cur and (cur == fn or cur:match("[: ]" .. fn .. "$")) then n = n + c end
  end
end
print(n)
LUA
)
awk -v t="$total" -v c="$calls" 'BEGIN {
  printf "RESULT user_instructions_per_rt=%.0f instructions=%d round_trips=%d\n", c ? t / c : 0, t, c }'
