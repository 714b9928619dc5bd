#!/usr/bin/env bash
# Install the Debian packages lunio needs to build, test, lint and benchmark.
# Idempotent: when everything is already installed it only runs dpkg-query.
# Never starts or enables the system nginx service (specs run their own).
set -euo pipefail

packages=(
  # build: C toolchain, Lua 5.4 headers, libuv, libcurl
  build-essential cmake pkg-config lua5.4 liblua5.4-dev libuv1-dev
  libcurl4-openssl-dev
  # test and lint: busted, luarocks (rock check), luacheck, formatting,
  # valgrind, nginx + echo module and openssl for the HTTP fixture, curl
  lua-busted luarocks lua-check clang-format valgrind nginx-light
  libnginx-mod-http-echo openssl curl lua-cjson
  # benchmarks only: peers and load generators
  python3-uvloop python3-aiohttp lua-cqueues lua-luv wrk hyperfine
)

echo_module=/usr/share/nginx/modules/ngx_http_echo_module.so

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)) && [[ -e $echo_module ]]; then
  exit 0
fi

sudo=()
if ((EUID != 0)); then sudo=(sudo); fi

if ((${#missing[@]})); then
  echo "deps.sh: installing ${missing[*]}" >&2
  nginx_was_installed=0
  dpkg-query -W -f='${Status}' nginx-light 2>/dev/null |
    grep -q 'install ok installed' && nginx_was_installed=1
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Installing nginx starts the distribution's service on port 80; the
  # specs bring their own nginx, so stop it again.
  if ((nginx_was_installed == 0)); then
    "${sudo[@]}" systemctl stop nginx 2>/dev/null ||
      "${sudo[@]}" service nginx stop 2>/dev/null ||
      "${sudo[@]}" nginx -s stop 2>/dev/null || true
  fi
fi

if [[ ! -e $echo_module ]]; then
  echo "deps.sh: $echo_module missing, reinstalling libnginx-mod-http-echo" >&2
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    --reinstall libnginx-mod-http-echo
fi
[[ -e $echo_module ]] || { echo "deps.sh: $echo_module not found" >&2; exit 1; }
