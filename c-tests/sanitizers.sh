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
for src in c-tests/link_smoke.c c-tests/patch_self.c; do
  name=$(basename "$src" .c)
  # The programs that use the KLP_PATCHABLE macros need GNU C.
  case "$name" in
    patch_self) std=gnu11 ;;
    *) std=c11 ;;
  esac
  "$cc" -std=$std -Wall -Wextra -Werror -g -fsanitize=address -fno-omit-frame-pointer \
    -I include "$src" "$lib" -lpthread -ldl -lm -o "$out/$name.asan"
  echo "+ $name under AddressSanitizer"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "$out/$name.asan" > "$out/$name.asan.out"
  "$cc" -std=$std -Wall -Wextra -Werror -g -I include "$src" "$lib" -lpthread -ldl -lm -o "$out/$name"
  echo "+ $name under valgrind memcheck"
  valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
    --show-possibly-lost=no "$out/$name" > "$out/$name.valgrind.out"
done
echo "sanitizers: 0 errors"
