#!/usr/bin/env bash
# The C programs of c-tests/, once under AddressSanitizer (with leak checking) and once
# under valgrind memcheck, against the static libklp; both must report zero errors.
# Called by .ci/run from the top of the repository.
set -euo pipefail
cc=${CC:-gcc}
out=target/c-sanitizers
mkdir -p "$out"
cargo build --release -p klp-ffi
lib=target/release/libklp.a

# A shared object whose klp symbols stay undefined: they are resolved from the program
# (linked with -rdynamic) when it is opened.
module() { # name source
  "$cc" -std=gnu11 -Wall -Wextra -Werror -g -fPIC -shared -I include "$2" -o "$out/$1.so"
}

# Build `src` twice (with AddressSanitizer, and plain for valgrind) and run both with
# the program arguments that follow `--`.
check() { # name source std [link flags...] -- [program arguments...]
  local name=$1 src=$2 std=$3
  shift 3
  local link=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do link+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  "$cc" -std="$std" -Wall -Wextra -Werror -g -fsanitize=address -fno-omit-frame-pointer \
    -I include "$src" "$lib" "${link[@]}" -lpthread -ldl -lm -o "$out/$name.asan"
  echo "+ $name $* under AddressSanitizer"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "$out/$name.asan" "$@" > "$out/$name.asan.out"
  "$cc" -std="$std" -Wall -Wextra -Werror -g -I include "$src" "$lib" "${link[@]}" \
    -lpthread -ldl -lm -o "$out/$name"
  echo "+ $name $* under valgrind memcheck"
  valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
    --show-possibly-lost=no "$out/$name" "$@" > "$out/$name.valgrind.out"
}

# `check` under AddressSanitizer only.
asan_only() { # name source std -- [program arguments...]
  local name=$1 src=$2 std=$3
  shift 4
  "$cc" -std="$std" -Wall -Wextra -Werror -g -fsanitize=address -fno-omit-frame-pointer \
    -I include "$src" "$lib" -lpthread -ldl -lm -o "$out/$name.asan"
  echo "+ $name $* under AddressSanitizer"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "$out/$name.asan" "$@" > "$out/$name.asan.out"
}

module libtarget_mod c-tests/target_mod.c
module patch_mod c-tests/patch_mod.c
module libplain_lib c-tests/plain_lib.c

# The KLP_PATCHABLE macros need GNU C; link_smoke is strict C11.
check link_smoke c-tests/link_smoke.c c11
check patch_self c-tests/patch_self.c gnu11
check object_main c-tests/object_main.c gnu11 -rdynamic -- "$out/libtarget_mod.so"
check patch_so_main c-tests/patch_so_main.c gnu11 -rdynamic -- "$out/patch_mod.so" release
check patch_so_main c-tests/patch_so_main.c gnu11 -rdynamic -- "$out/patch_mod.so" forced
# Leaving patchable functions without returning, each switch point; cancellation; bad
# input on every export.
for sp in call update park; do
  check longjmp c-tests/longjmp.c gnu11 -- "$sp"
done
check cancel c-tests/cancel.c gnu11
check altstack c-tests/altstack.c gnu11
check bad_input c-tests/bad_input.c gnu11
# Real processes: signal handlers under load (a hundredth of the default run), every
# context of klp.h's table, coroutines on every stack layout, a library without
# KLP_OBJECT closed under its patch, kicks of exiting threads.
for sync in preempt rcu; do
  export KLP_SYNC=$sync
  check signals c-tests/signals.c gnu11 -- quick
  check contexts c-tests/contexts.c gnu11
  for layout in heap below above; do
    check coroutine c-tests/coroutine.c gnu11 -- "$layout"
  done
  # Coroutine stacks inside the thread's own stack: valgrind cannot tell them apart.
  for layout in shared local; do
    asan_only coroutine c-tests/coroutine.c gnu11 -- "$layout"
  done
  check plain_main c-tests/plain_main.c gnu11 -rdynamic -- "$out/libplain_lib.so"
  check kick_exit c-tests/kick_exit.c gnu11
  # fork under valgrind, without its leak check (a child leaks, by construction, what
  # the parent's other threads had allocated). Not under AddressSanitizer: its allocator
  # keeps a lock that a fork can leave held in the child (it hangs there at its first
  # allocation, whatever libklp does).
  "$cc" -std=gnu11 -Wall -Wextra -Werror -g -I include c-tests/fork.c "$lib" -lpthread -ldl \
    -lm -o "$out/fork"
  for mode in mid inside callback first; do
    echo "+ fork $mode under valgrind memcheck (no leak check)"
    valgrind -q --error-exitcode=1 --leak-check=no "$out/fork" "$mode" > "$out/fork.valgrind.out"
  done
done
unset KLP_SYNC

# A C++ exception through patchable C functions: the C half with -fexceptions, the
# program with g++.
cxx=${CXX:-g++}
command -v "$cxx" > /dev/null || echo "SKIPPED: no C++ compiler ($cxx) for cxx_exception"
command -v "$cxx" > /dev/null && for mode in asan valgrind; do
  san=()
  exe="$out/cxx_exception"
  if [ $mode = asan ]; then
    san=(-fsanitize=address -fno-omit-frame-pointer)
    exe="$out/cxx_exception.asan"
  fi
  "$cc" -std=gnu11 -Wall -Wextra -Werror -g -fexceptions "${san[@]}" -I include \
    -c c-tests/cxx_exception_lib.c -o "$exe.lib.o"
  "$cxx" -Wall -Wextra -Werror -g "${san[@]}" -I include c-tests/cxx_exception.cpp \
    "$exe.lib.o" "$lib" -lpthread -ldl -lm -o "$exe"
  for sp in call update park; do
    if [ $mode = asan ]; then
      echo "+ cxx_exception $sp under AddressSanitizer"
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "$exe" "$sp" > "$exe.out"
    else
      echo "+ cxx_exception $sp under valgrind memcheck"
      valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
        --show-possibly-lost=no "$exe" "$sp" > "$exe.valgrind.out"
    fi
  done
done

# The kernel's selftests (c-tests/selftests), every case under both flavors: the modules
# leave their klp symbols to the driver (-rdynamic), which links libklp.a. The livepatch
# modules are in the kernel's form (the compatibility headers), the target modules use
# klp_selftest.h.
st=c-tests/selftests
mkdir -p "$out/selftests"
for m in "$st"/test_modules/*.c; do
  name=$(basename "$m" .c)
  case $name in
    test_klp_callbacks_mod|test_klp_callbacks_busy|test_klp_mod_target)
      "$cc" -std=gnu11 -Wall -Wextra -Werror -g -fPIC -shared -I include -I "$st" \
        -DKBUILD_MODNAME="\"$name\"" "$m" -o "$out/selftests/$name.so" ;;
    *)
      "$cc" -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Werror -g -fPIC -shared \
        -I include/klp/compat -DKBUILD_MODNAME="\"$name\"" "$m" -o "$out/selftests/$name.so" ;;
  esac
done
driver=("$st"/vmlinux.c "$st"/functions.c "$st"/test-*.c)
"$cc" -std=gnu11 -Wall -Wextra -Werror -g -fsanitize=address -fno-omit-frame-pointer \
  -I include -I "$st" "${driver[@]}" "$lib" -rdynamic -lpthread -ldl -lm \
  -o "$out/selftests/selftests.asan"
"$cc" -std=gnu11 -Wall -Wextra -Werror -g -I include -I "$st" "${driver[@]}" "$lib" \
  -rdynamic -lpthread -ldl -lm -o "$out/selftests/selftests"
for sync in preempt rcu; do
  for f in "$st"/expected/*.log; do
    case=$(basename "$f" .log)
    echo "+ selftest $case ($sync) under AddressSanitizer and valgrind memcheck"
    KLP_SYNC=$sync ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
      "$out/selftests/selftests.asan" "$case" "$out/selftests" \
      > "$out/selftests/$case.$sync.asan.out"
    KLP_SYNC=$sync valgrind -q --error-exitcode=1 --leak-check=full \
      --errors-for-leak-kinds=definite --show-possibly-lost=no \
      "$out/selftests/selftests" "$case" "$out/selftests" \
      > "$out/selftests/$case.$sync.valgrind.out"
  done
done
# Kernel livepatch modules through the compatibility headers: the loader's bad input and
# the headers' facilities (c-tests/modules), and the kernel's samples (c-tests/samples),
# with the modules' klp symbols left to the program (-rdynamic, libklp.a).
mkdir -p "$out/modules" "$out/samples"
kmodule() { # source output
  "$cc" -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Werror -g -fPIC -shared \
    -I include/klp/compat "$1" -o "$2"
}
for m in lp_good lp_unmarked mod_initfail mod_noexit mod_unknown_symbol mod-kernel-api; do
  kmodule "c-tests/modules/$m.c" "$out/modules/$m.so"
done
"$cc" -std=gnu11 -Wall -Wextra -Werror -g -fPIC -shared c-tests/modules/not_a_module.c \
  -o "$out/modules/not_a_module.so"
for m in c-tests/samples/livepatch-*.c; do
  kmodule "$m" "$out/samples/$(basename "$m" .c).so"
done
for sync in preempt rcu; do
  export KLP_SYNC=$sync
  check modules_main c-tests/modules/modules_main.c gnu11 -rdynamic -- "$out/modules"
  # Not the shadow variable demo: its buggy module leaks, by design.
  for scenario in sample callbacks-demo-first callbacks-busy; do
    check samples_kernel c-tests/samples/kernel.c gnu11 -I include/klp/compat -rdynamic -- \
      "$scenario" "$out/samples"
  done
done
unset KLP_SYNC
echo "sanitizers: 0 errors"
