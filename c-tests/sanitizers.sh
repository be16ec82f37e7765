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

module libtarget_mod c-tests/target_mod.c
module patch_mod c-tests/patch_mod.c

# The KLP_PATCHABLE macros need GNU C; link_smoke is strict C11.
check link_smoke c-tests/link_smoke.c c11
check patch_self c-tests/patch_self.c gnu11
check object_main c-tests/object_main.c gnu11 -rdynamic -- "$out/libtarget_mod.so"
check patch_so_main c-tests/patch_so_main.c gnu11 -rdynamic -- "$out/patch_mod.so" release
check patch_so_main c-tests/patch_so_main.c gnu11 -rdynamic -- "$out/patch_mod.so" forced
echo "sanitizers: 0 errors"
