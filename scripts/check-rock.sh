#!/usr/bin/env bash
# The install check (`make check-rock`, the last step of `make test`): runs
# the install commands README.md shows, verbatim, and tests what they
# installed, so the README's instructions are known to work.
#
#   1. the rockspecs list src/*.c and every lua/ module (check-rockspec.lua)
#   2. README.md's install block is the list of commands below, so the README
#      and this check change together
#   3. luarocks make --tree=DIR, then in a fresh directory: luarocks path,
#      lua5.4 script.lua, the lunio command and busted under lua5.4
#   4. luarocks pack of the release rockspec, install of the .src.rock
#   5. as root: luarocks make into the system tree, then luarocks remove
#
# Everything it makes goes to a temporary directory; the work tree is left as
# it was (checked at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { echo "check-rock: $*"; }
fail() { echo "check-rock: FAIL: $*" >&2; exit 1; }

# The README's commands, in README order, as this check knows how to test
# them: DIR is a directory, script.lua a script. When README.md changes,
# update this list and the steps below.
expected=(
  'luarocks --lua-version=5.4 make rockspec/lunio-scm-1.rockspec'
  'luarocks --lua-version=5.4 make rockspec/lunio-scm-1.rockspec --tree=DIR'
  'eval "$(luarocks --lua-version=5.4 --tree=DIR path)"'
  'lua5.4 script.lua'
  'lunio script.lua args...'
  "lunio -e 'lunio.sleep(0.1) print(\"hi\")'"
  'lunio -v'
  'lua5.4 "$(command -v busted)" spec/'
)

# A newcomer's shell: no Lua paths from elsewhere (e.g. an earlier
# `luarocks path`), no development build of lunio.core.
unset LUA_PATH LUA_CPATH LUA_PATH_5_4 LUA_CPATH_5_4 LUA_INIT LUA_INIT_5_4 \
  LUNIO_BUILD_DIR

git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
  fail "$root is not a git work tree (the check snapshots it with git)"

# The builtin backend compiles in the work tree: it leaves src/*.o and
# lunio/core.so behind (ignored by git). Remove them after every build, and
# before starting, so that the work tree's state can be compared at the end.
remove_build_leftovers() {
  rm -f "$root"/src/*.o "$root/lunio/core.so"
  rmdir "$root/lunio" 2>/dev/null || true
}
remove_build_leftovers
tree_state=$(git status --porcelain --ignored)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lunio-rock.XXXXXX")
system_rock=0 # 1 while this check has lunio in the system tree
new_dirs=()   # directories of the system tree that this check created
# Removes lunio from the system tree, and the manifest `luarocks remove`
# leaves behind when the tree's rocks directory is this check's doing.
remove_system_rock() {
  luarocks --lua-version=5.4 remove lunio >"$tmp/remove.log" 2>&1 ||
    { cat "$tmp/remove.log" >&2; return 1; }
  system_rock=0
  if ((${#new_dirs[@]})); then
    rm -f "${new_dirs[0]}/manifest"
    rmdir "${new_dirs[@]}" 2>/dev/null || true
  fi
}
cleanup() {
  if ((system_rock)); then
    remove_system_rock ||
      echo "check-rock: could not remove lunio from the system tree" >&2
  fi
  remove_build_leftovers
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. lists
lua5.4 scripts/check-rockspec.lua rockspec/*.rockspec ||
  fail "fix the rockspec lists above (rockspec/*.rockspec)"
say "rockspec/*.rockspec: sources are src/*.c, all of lua/ is installed," \
  "scm and release agree"
for spec in rockspec/*.rockspec; do
  luarocks --lua-version=5.4 lint "$spec" >"$tmp/lint.log" 2>&1 ||
    { cat "$tmp/lint.log" >&2; fail "luarocks lint $spec"; }
done
say "luarocks lint rockspec/*.rockspec"

# ---------------------------------------------------------------- 2. README
# The indented lines between the markers, without trailing `# comments`.
mapfile -t readme < <(
  sed -n '/^<!-- check-rock:begin -->$/,/^<!-- check-rock:end -->$/p' \
    README.md | sed -n 's/^    //p' | sed -E 's/[[:space:]]+#[[:space:]].*$//')
if [[ $(printf '%s\n' "${readme[@]}") != $(printf '%s\n' "${expected[@]}") ]]
then
  diff -u --label 'scripts/check-rock.sh (expected)' \
    --label 'README.md (check-rock block)' \
    <(printf '%s\n' "${expected[@]}") <(printf '%s\n' "${readme[@]}") >&2 ||
    true
  fail "README.md's install commands differ from the ones this check tests;" \
    "update scripts/check-rock.sh with README.md"
fi
make_system=${readme[0]} make_tree=${readme[1]} use_tree=${readme[2]}
run_script=${readme[3]} run_lunio=${readme[4]} run_e=${readme[5]}
run_v=${readme[6]} run_busted=${readme[7]}
say "README.md's install block has the ${#readme[@]} commands this check runs"

# run CMD: runs a README command with DIR replaced by the tree, in this shell
# (so that `eval "$(luarocks path)"` takes effect); output in $tmp/out.
run() {
  eval "${1//DIR/$tree}" >"$tmp/out" 2>&1 ||
    { cat "$tmp/out" >&2; fail "README command failed: $1 (DIR=$tree)"; }
}
# Prints the command that ran and the last line of its output.
ran() {
  local last
  last=$(grep -v '^[[:space:]]*$' "$tmp/out" | tail -n 1) || true
  say "\$ $1  -> ${last:-(no output)}"
}

# A script and a spec as a newcomer would write them. The script reports
# where lunio.core came from, so a copy elsewhere cannot pass for the tree's.
mkdir -p "$tmp/project/spec"
# Under the lunio command the script already runs as the main task. API.md
# says lunio.run then runs its function in place, but lunio does not do that
# yet ("a loop is already running"), so the script does not rely on it.
cat >"$tmp/project/script.lua" <<'EOF'
local lunio = require "lunio"
local function main() lunio.sleep(0.01); return "ran" end
local result = lunio.current_task() and main() or lunio.run(main)
print(result, table.concat(arg, " "), package.searchpath("lunio.core",
  package.cpath))
EOF
cat >"$tmp/project/spec/lunio_spec.lua" <<'EOF'
describe("lunio from the tree", function()
  it("runs under Lua 5.4", function()
    local lunio = require "lunio"
    assert.equal("Lua 5.4", _VERSION)
    assert.equal(42, lunio.run(function() lunio.sleep(0.01); return 42 end))
  end)
end)
EOF

# expect_script ARGS LIBDIR: checks the output of script.lua (run with ARGS,
# lunio.core loaded from LIBDIR).
expect_script() {
  local want
  want=$(printf 'ran\t%s\t%s/lunio/core.so' "$1" "$2")
  [[ $(cat "$tmp/out") == "$want" ]] ||
    fail "script.lua printed '$(cat "$tmp/out")', want '$want'"
}

# ---------------------------------------------------------------- 3. --tree
tree=$tmp/tree
run "$make_tree"
remove_build_leftovers
ran "$make_tree"

# In a fresh directory and a subshell: ./?.lua must not find the work tree's
# files, and the eval must not reach the later steps.
(
  cd "$tmp/project"
  run "$use_tree"
  ran "$use_tree"
  [[ $(command -v lunio) == "$tree/bin/lunio" ]] ||
    fail "after $use_tree, lunio is '$(command -v lunio)', want $tree/bin/lunio"
  run "$run_script"
  expect_script "" "$tree/lib/lua/5.4"
  ran "$run_script"
  run "$run_lunio"
  expect_script "args..." "$tree/lib/lua/5.4"
  ran "$run_lunio"
  run "$run_e"
  [[ $(cat "$tmp/out") == hi ]] || fail "$run_e printed '$(cat "$tmp/out")'"
  ran "$run_e"
  run "$run_v"
  grep -q '^lunio [0-9]' "$tmp/out" || fail "$run_v printed '$(cat "$tmp/out")'"
  ran "$run_v"
  run "$run_busted"
  grep -q '^1 success / 0 failures / 0 errors' "$tmp/out" ||
    { cat "$tmp/out" >&2; fail "$run_busted did not run the spec"; }
  ran "$run_busted"
)

# ---------------------------------------------------------------- 4. .src.rock
# `luarocks pack` fetches the release rockspec's source (git tag v0.1.0).
# Offline, point a copy of the rockspec at a local git snapshot of the work
# tree (tracked and untracked files, as `luarocks make` sees them) tagged
# v0.1.0; nothing else in the rockspec changes.
release=lunio-0.1.0-1
snap=$tmp/snapshot/lunio
mkdir -p "$snap" "$tmp/pack"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do
    if [[ -e $f ]]; then cp -P --parents -- "$f" "$snap/"; fi
  done
(
  cd "$snap"
  git init -q && git add -A &&
    git -c user.name=check-rock -c user.email=check-rock@localhost \
      -c commit.gpgsign=false commit -q -m snapshot &&
    git tag v0.1.0
) >"$tmp/git.log" 2>&1 || { cat "$tmp/git.log" >&2; fail "git snapshot"; }
sed -E "s|^(  url = )\"[^\"]*\"|\1\"git+file://$snap\"|" \
  "rockspec/$release.rockspec" >"$tmp/pack/$release.rockspec"
grep -q "git+file://$snap" "$tmp/pack/$release.rockspec" ||
  fail "could not point rockspec/$release.rockspec's source.url at $snap"

tree2=$tmp/tree2
(
  cd "$tmp/pack"
  luarocks --lua-version=5.4 pack "$release.rockspec" >"$tmp/out" 2>&1 ||
    { cat "$tmp/out" >&2; fail "luarocks pack $release.rockspec"; }
  [[ -f $release.src.rock ]] || fail "luarocks pack made no $release.src.rock"
  say "\$ luarocks --lua-version=5.4 pack $release.rockspec" \
    "(source: local snapshot, tag v0.1.0)"
  luarocks --lua-version=5.4 install "./$release.src.rock" --tree="$tree2" \
    >"$tmp/out" 2>&1 ||
    { cat "$tmp/out" >&2; fail "luarocks install ./$release.src.rock"; }
  say "\$ luarocks --lua-version=5.4 install ./$release.src.rock --tree=DIR2"
  eval "$(luarocks --lua-version=5.4 --tree="$tree2" path)"
  cd "$tmp/project"
  lua5.4 script.lua >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "script.lua"; }
  expect_script "" "$tree2/lib/lua/5.4"
  out=$("$tree2/bin/lunio" -e 'print(1 + 1)') || fail "DIR2/bin/lunio failed"
  [[ $out == 2 ]] || fail "DIR2/bin/lunio -e printed '$out', want 2"
  say "$release.src.rock: lua5.4 script.lua and DIR2/bin/lunio -e work"
)

# ---------------------------------------------------------------- 5. system
# Only as root (the system tree is /usr/local), never over an existing
# install, and one check at a time: work trees on one machine share it.
if ((EUID != 0)); then
  say "skipped the system tree: not root"
else
  exec {lock}>"${TMPDIR:-/tmp}/lunio-check-rock.lock"
  flock "$lock"
  if luarocks --lua-version=5.4 show lunio >/dev/null 2>&1; then
    say "skipped the system tree: lunio is already installed" \
      "(luarocks --lua-version=5.4 show lunio); not touching it"
  else
    # The rocks directory first, then its parent, for rmdir.
    rocks_dir=$(luarocks --lua-version=5.4 config rocks_dir)
    for d in "$rocks_dir" "$(dirname "$rocks_dir")"; do
      [[ -e $d ]] || new_dirs+=("$d")
    done
    system_rock=1
    run "$make_system"
    remove_build_leftovers
    ran "$make_system"
    bin=$(luarocks --lua-version=5.4 config deploy_bin_dir)
    lib=$(luarocks --lua-version=5.4 config deploy_lib_dir)
    (
      cd "$tmp/project"
      [[ $(command -v lunio) == "$bin/lunio" ]] ||
        fail "lunio is '$(command -v lunio)', want $bin/lunio"
      lua5.4 script.lua >"$tmp/out" 2>&1 ||
        { cat "$tmp/out" >&2; fail "lua5.4 script.lua (system tree)"; }
      expect_script "" "$lib"
      lunio script.lua system >"$tmp/out" 2>&1 ||
        { cat "$tmp/out" >&2; fail "lunio script.lua (system tree)"; }
      expect_script "system" "$lib"
    )
    say "system tree: lua5.4 script.lua and $bin/lunio script.lua work"
    remove_system_rock || fail "luarocks --lua-version=5.4 remove lunio"
    if luarocks --lua-version=5.4 show lunio >/dev/null 2>&1 ||
      [[ -e $bin/lunio ]]; then
      fail "lunio is still installed after luarocks remove"
    fi
    say "\$ luarocks --lua-version=5.4 remove lunio"
  fi
  flock -u "$lock"
fi

# ---------------------------------------------------------------- the end
[[ $(git status --porcelain --ignored) == "$tree_state" ]] ||
  fail "the work tree changed: $(git status --porcelain --ignored)"
say "work tree left as it was"
say ok
