# lunio: a thin wrapper over scripts/deps.sh, CMake, busted, luacheck and
# luarocks. CMakeLists.txt is the one build description; `make help` lists
# the targets. Each target first installs the Debian packages of its own
# group (scripts/deps.sh GROUP: build, test, lint, asan, valgrind, bench), so
# `make test` does not pull in valgrind, clang-format or the benchmark peers.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

BUILD_DIR ?= build
ASAN_DIR ?= build-asan
ASAN_CC ?= gcc
WERROR ?= ON
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
LUA ?= lua5.4
BUSTED_ARGS ?=
# the groups `make deps` installs
DEPS ?= build test
# e.g. ASAN_EXTRA=:fast_unwind_on_malloc=0 for leak stacks through libcurl
ASAN_EXTRA ?=

# busted runs in the lua5.4 process itself (not via its --lua re-exec), so
# LD_PRELOAD and valgrind apply to the process that loads lunio.core.
BUSTED_SCRIPT = $(shell command -v busted || echo /usr/bin/busted)
BUSTED = $(BUSTED_SCRIPT) --ignore-lua $(BUSTED_ARGS)

# check-asan: $(ASAN_DIR)/bin/lua5.4 (made by CMakeLists.txt) preloads the
# ASan runtime; it comes first in PATH so children started as `lua5.4` are
# sanitized too. ASan/LSan reports go to $(ASAN_DIR)/reports, from every
# process; UBSan ignores log_path in gcc's combined runtime, so its reports
# go to stderr and halt the process (the suite fails when it is busted's).
ASAN_REPORTS = $(CURDIR)/$(ASAN_DIR)/reports
ASAN_ENV = LUNIO_BUILD_DIR=$(ASAN_DIR) PATH="$(CURDIR)/$(ASAN_DIR)/bin:$$PATH" \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1:log_path=$(ASAN_REPORTS)/asan$(ASAN_EXTRA) \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# Each target that runs busted ends with one line "N passed, M failed" and
# fails when M > 0: `$(call tally,COMMAND)` runs busted and passes its
# output through scripts/tally.lua, which counts it (into $(2) instead of
# the target's tally file when given); a failing run does not stop the
# target, the closing `$(TALLY) total` does.
TALLY = $(LUA) scripts/tally.lua
TALLY_FILE = $(CURDIR)/.tally-$@
tally = { $(1) || echo "tally: exit $$?"; } 2>&1 | $(TALLY) add $(or $(2),$(TALLY_FILE))
# (tag lists in variables: a comma inside $(call ...) would split it)
ASAN_TAGS = --exclude-tags=scale,stress
VALGRIND_TAGS = --exclude-tags=slow,novalgrind,scale,stress

# --child-silent-after-fork: a child that uv_spawn forks and whose exec
# fails (a missing program) exits with a copy of our heap but without our
# threads; valgrind would report their thread-local blocks as lost.
VALGRIND = valgrind -q --error-exitcode=99 --leak-check=full \
  --errors-for-leak-kinds=definite --keep-debuginfo=yes \
  --child-silent-after-fork=yes

LUACHECK_PATHS = $(wildcard lua spec examples bench bin/lunio)
C_FILES = $(wildcard src/*.c src/*.h)

.PHONY: help deps build test demo check-asan check-valgrind check-stress \
  asan-build lint format bench check-rock clean

help:
	@echo 'Each target first installs the Debian packages it needs (its group):'
	@echo 'make deps            install the groups in DEPS (default: build test)'
	@echo 'make build           build lunio.core: $(BUILD_DIR)/lunio/core.so        [build]'
	@echo 'make test            build, run the busted suite, then check-rock [test]'
	@echo 'make demo            build, then run scripts/demo.sh              [test]'
	@echo 'make check-asan      suite under ASan+UBSan, plain and GC stress  [asan]'
	@echo 'make check-valgrind  suite under valgrind, plain and GC stress    [valgrind]'
	@echo 'make check-stress    only the specs tagged stress (long runs)     [asan]'
	@echo 'make lint            luacheck, clang-format --dry-run, C layers [lint]'
	@echo 'make format          clang-format -i src/*.c src/*.h              [lint]'
	@echo 'make bench           run bench/run                                [bench]'
	@echo "make check-rock      README.md's install commands, rockspec lists [test]"
	@echo 'make clean           remove build directories and luarocks leftovers'
	@echo 'Variables: BUSTED_ARGS (e.g. spec/timer_spec.lua), WERROR=OFF, JOBS, ASAN_CC=clang,'
	@echo '  ASAN_EXTRA (e.g. :fast_unwind_on_malloc=0 for full leak stacks), DEPS (e.g. "lint bench"),'
	@echo '  STRESS_FULL=1 (check-stress at full sizes; docs/reliability.md lists the knobs)'

deps:
	scripts/deps.sh $(DEPS)

build:
	scripts/deps.sh build
	cmake -S . -B $(BUILD_DIR) --log-level=WARNING \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLUNIO_WERROR=$(WERROR)
	cmake --build $(BUILD_DIR) -j $(JOBS)

# check-spec-deps first: a spec that runs a program outside the test group
# would pass here and fail on a fresh machine.
test: build
	scripts/deps.sh test
	scripts/check-spec-deps.sh
	@rm -f $(TALLY_FILE)
	$(call tally,LUNIO_BUILD_DIR=$(BUILD_DIR) $(LUA) $(BUSTED) --exclude-tags=stress)
	scripts/check-rock.sh || $(TALLY) fail $(TALLY_FILE) check-rock
	@$(TALLY) total $(TALLY_FILE)

# Specs tagged #stress (minutes: load, cancellation storm, soak, faults,
# fuzzing; thousands of sockets): never in `make test`. CI sizes unless
# STRESS_FULL=1; the ones also tagged #sanitize (faults, fuzzing) run
# under ASan+UBSan instead of the plain build.
check-stress: build asan-build
	scripts/deps.sh test
	@rm -f $(TALLY_FILE)
	$(call tally,LUNIO_BUILD_DIR=$(BUILD_DIR) $(LUA) $(BUSTED) --tags=stress \
	  --exclude-tags=sanitize)
	$(call asan_run,,--tags=sanitize)
	@$(TALLY) total $(TALLY_FILE)

demo: build
	scripts/deps.sh test
	scripts/demo.sh

# One sanitized run of busted; $(1) adds environment (GC stress), $(2)
# replaces the tag options (default: the suite without `scale`, timing
# ratios that mean nothing under the sanitizers, and without `stress`).
# A failed test, a non-zero exit and any report file (whichever process
# made it) count as failures. When the only reports are LeakSanitizer's
# tracer crashing at exit (scripts/lsan-tracer-crash.sh: a flaw of the
# runtime, after which no leak check ran), the run is repeated once and
# only the second run counts.
define asan_run
	for attempt in 1 2; do \
	  rm -rf $(ASAN_REPORTS) && mkdir -p $(ASAN_REPORTS) && rm -f $(TALLY_FILE).run; \
	  $(call tally,$(ASAN_ENV) $(1) $(ASAN_DIR)/bin/lua5.4 $(BUSTED) \
	    $(or $(2),$(ASAN_TAGS)),$(TALLY_FILE).run); \
	  if [ $$attempt = 1 ] && scripts/lsan-tracer-crash.sh $(ASAN_REPORTS); then \
	    cat $(ASAN_REPORTS)/* >&2; \
	    echo '$@: LeakSanitizer crashed at exit (above); running again' >&2; \
	    continue; \
	  fi; \
	  break; \
	done
	cat $(TALLY_FILE).run >> $(TALLY_FILE) && rm -f $(TALLY_FILE).run
	if compgen -G '$(ASAN_REPORTS)/*' >/dev/null; then \
	  cat $(ASAN_REPORTS)/* >&2; \
	  echo '$@: sanitizer reports above ($(or $(1),plain run))' >&2; \
	  $(TALLY) fail $(TALLY_FILE) sanitizer; \
	fi
endef

asan-build:
	scripts/deps.sh asan
	cmake -S . -B $(ASAN_DIR) --log-level=WARNING \
	  -DCMAKE_C_COMPILER=$(ASAN_CC) -DCMAKE_BUILD_TYPE=Debug \
	  -DLUNIO_SANITIZE=ON -DLUNIO_WERROR=$(WERROR)
	cmake --build $(ASAN_DIR) -j $(JOBS)

check-asan: asan-build
	@rm -f $(TALLY_FILE)
	$(call asan_run,)
	$(call asan_run,LUNIO_GC_STRESS=1)
	@$(TALLY) total $(TALLY_FILE)

check-valgrind: build
	scripts/deps.sh valgrind
	@rm -f $(TALLY_FILE)
	$(call tally,LUNIO_BUILD_DIR=$(BUILD_DIR) $(VALGRIND) $(LUA) $(BUSTED) \
	  $(VALGRIND_TAGS))
	$(call tally,LUNIO_BUILD_DIR=$(BUILD_DIR) LUNIO_GC_STRESS=1 $(VALGRIND) \
	  $(LUA) $(BUSTED) $(VALGRIND_TAGS))
	@$(TALLY) total $(TALLY_FILE)

lint: build
	scripts/deps.sh lint
	luacheck $(LUACHECK_PATHS)
	$(if $(C_FILES),clang-format --dry-run --Werror $(C_FILES))
	$(LUA) scripts/check-layers.lua $(BUILD_DIR)

format:
	scripts/deps.sh lint
	$(if $(C_FILES),clang-format -i $(C_FILES))

bench: build
	scripts/deps.sh bench
	bench/run

check-rock:
	scripts/deps.sh test
	scripts/check-rock.sh

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) src/*.o lunio/core.so .tally-*
	rmdir lunio 2>/dev/null || true
