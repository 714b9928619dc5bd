#!/bin/bash
# scripts/lsan-tracer-crash.sh DIR: succeeds when DIR holds sanitizer
# reports and every one of them is LeakSanitizer's own stop-the-world
# tracer crashing at process exit ("Tracer caught signal 11 ...
# LeakSanitizer has encountered a fatal error"), with no report of a real
# error in any of them. That crash is a known intermittent failure of the
# sanitizer runtime, not of the program (google/sanitizers#1353): the leak
# check simply did not run. `make check-asan` then runs the suite once more
# instead of failing on it; a real report, or the same crash twice, fails.
set -eu
dir=$1
shopt -s nullglob
reports=("$dir"/*)
((${#reports[@]} > 0)) || exit 1
for r in "${reports[@]}"; do
  grep -q 'LeakSanitizer has encountered a fatal error' "$r" || exit 1
  grep -q 'Tracer caught signal' "$r" || exit 1
  if grep -qE 'ERROR: (Address|Leak|Undefined)Sanitizer|SUMMARY:|runtime error:' "$r"; then
    exit 1
  fi
done
exit 0
