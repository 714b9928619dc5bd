#!/usr/bin/env bash
# W5 with the curl command-line tool: COUNT GETs of URL, CONC in flight
# (--parallel --parallel-max CONC, connections reused). The time includes
# curl's start-up (a few ms), measured around the curl process.
# usage: w5.sh URL COUNT CONC
set -euo pipefail
URL=$1 COUNT=$2 CONC=$3
cfg=$(mktemp)
sizes=$(mktemp)
trap 'rm -f "$cfg" "$sizes"' EXIT
for ((i = 0; i < COUNT; i++)); do
  printf 'url = "%s"\noutput = "/dev/null"\n' "$URL"
done > "$cfg"
t0=$(date +%s.%N)
curl -s --no-progress-meter --parallel --parallel-max "$CONC" -w '%{http_code} %{size_download}\n' \
  -K "$cfg" > "$sizes"
t1=$(date +%s.%N)
awk -v t0="$t0" -v t1="$t1" -v n="$COUNT" '
  { if ($1 != 200) bad++; bytes += $2; got++ }
  END {
    if (bad || got != n) { printf "got %d of %d, %d bad\n", got, n, bad > "/dev/stderr"; exit 1 }
    e = t1 - t0
    printf "RESULT req_per_s=%.6g mb_per_s=%.6g elapsed_s=%.6g requests=%d bytes=%d\n",
      n / e, bytes / e / 1e6, e, n, bytes
  }' "$sizes"
