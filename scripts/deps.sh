#!/usr/bin/env bash
# Installs the Debian packages of the named groups (and the groups they
# include), so each make target pulls in only what it uses:
#
#   scripts/deps.sh GROUP...         install what is missing
#   scripts/deps.sh --list GROUP...  print the packages, one a line
#
#   build     compile lunio.core (make build)
#   test      build + the suite and the rock check (make test, make demo)
#   lint      luacheck and clang-format (make lint)
#   asan      test; gcc brings ASan/UBSan itself (make check-asan)
#   valgrind  test + valgrind (make check-valgrind)
#   bench     test (the nginx fixture) + peers and load generators (make bench)
#
# Idempotent: when everything is installed it only runs dpkg-query. Never
# leaves the system nginx service running (the specs start their own).
set -euo pipefail

usage() {
  echo "usage: scripts/deps.sh [--list] GROUP...  (groups: build test lint" \
    "asan valgrind bench)" >&2
  exit 2
}

# group_packages GROUP: the group's own packages (group_includes names the
# groups it builds on).
group_packages() {
  case $1 in
    build) echo build-essential cmake pkg-config lua5.4 liblua5.4-dev \
      libuv1-dev libcurl4-openssl-dev ;;
    # The suite (busted) and the rock check (luarocks, git); nginx with the
    # echo module, openssl and curl for the HTTP fixture; python3-minimal is
    # /usr/bin/python3, run by scripts/nginx-fixture and
    # spec/support/bad_server.lua; tmux, for specs that drive the
    # interactive lunio (REPL) through a terminal.
    test) echo lua-busted luarocks git nginx-light libnginx-mod-http-echo \
      openssl curl lua-cjson python3-minimal tmux ;;
    lint) echo lua-check clang-format ;;
    # libasan and libubsan come with gcc (build-essential); ASAN_CC=clang
    # needs clang, which is not installed here.
    asan) ;;
    valgrind) echo valgrind ;;
    # Peers and load generators; node comes from outside Debian.
    bench) echo python3-uvloop python3-aiohttp lua-cqueues lua-luv wrk \
      hyperfine ;;
    *) echo "deps.sh: unknown group '$1'" >&2; usage ;;
  esac
}

group_includes() {
  case $1 in
    test) echo build ;;
    asan | valgrind | bench) echo test ;;
  esac
}

list=0
if [[ ${1:-} == --list ]]; then list=1; shift; fi
(($# > 0)) || usage

# The named groups and everything they include, each package once.
declare -A seen_group=() seen_package=()
packages=()
add_group() {
  local g=$1 inc p
  [[ -z ${seen_group[$g]:-} ]] || return 0
  seen_group[$g]=1
  for inc in $(group_includes "$g"); do add_group "$inc"; done
  local own
  own=$(group_packages "$g") || exit
  for p in $own; do
    if [[ -z ${seen_package[$p]:-} ]]; then
      seen_package[$p]=1
      packages+=("$p")
    fi
  done
}
for g in "$@"; do add_group "$g"; done

if ((list)); then
  if ((${#packages[@]})); then printf '%s\n' "${packages[@]}"; fi
  exit 0
fi

echo_module=/usr/share/nginx/modules/ngx_http_echo_module.so
want_echo=${seen_package[libnginx-mod-http-echo]:-0}

installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == \
    "install ok installed" ]]
}

missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done

if ((${#missing[@]} == 0)) && { ((!want_echo)) || [[ -e $echo_module ]]; }
then
  exit 0
fi

sudo=()
if ((EUID != 0)); then sudo=(sudo); fi
# Wait for another apt-get/dpkg (up to 10 minutes) instead of failing.
apt_wait=(-o DPkg::Lock::Timeout=600)

if ((${#missing[@]})); then
  echo "deps.sh: installing ${missing[*]}" >&2
  nginx_was_installed=0
  installed nginx-light && nginx_was_installed=1
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get "${apt_wait[@]}" update -qq
  "${sudo[@]}" apt-get "${apt_wait[@]}" install -y -qq \
    --no-install-recommends "${missing[@]}"
  # Installing nginx starts the distribution's service on port 80; the
  # specs bring their own nginx, so stop it again.
  if ((nginx_was_installed == 0)) && installed nginx-light; then
    "${sudo[@]}" systemctl stop nginx 2>/dev/null ||
      "${sudo[@]}" service nginx stop 2>/dev/null ||
      "${sudo[@]}" nginx -s stop 2>/dev/null || true
  fi
fi

# The package can be installed while its module file is gone (removed by
# hand, or a half-finished upgrade); the HTTP fixture needs the file.
if ((want_echo)) && [[ ! -e $echo_module ]]; then
  echo "deps.sh: $echo_module missing, reinstalling libnginx-mod-http-echo" >&2
  "${sudo[@]}" apt-get "${apt_wait[@]}" install -y -qq \
    --no-install-recommends --reinstall libnginx-mod-http-echo
  [[ -e $echo_module ]] ||
    { echo "deps.sh: $echo_module not found" >&2; exit 1; }
fi
