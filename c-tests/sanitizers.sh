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
# object_main opens the shared object target_mod, whose klp symbols stay undefined and
# are resolved from the program (linked with -rdynamic).
"$cc" -std=gnu11 -Wall -Wextra -Werror -g -fPIC -shared -I include c-tests/target_mod.c \
  -o "$out/libtarget_mod.so"
for src in c-tests/link_smoke.c c-tests/patch_self.c c-tests/object_main.c; do
  name=$(basename "$src" .c)
  # The programs that use the KLP_PATCHABLE macros need GNU C.
  case "$name" in
    patch_self | object_main) std=gnu11 ;;
    *) std=c11 ;;
  esac
  args=()
  link=()
  if [ "$name" = object_main ]; then
    args=("$out/libtarget_mod.so")
    link=(-rdynamic)
  fi
  "$cc" -std=$std -Wall -Wextra -Werror -g -fsanitize=address -fno-omit-frame-pointer \
    -I include "$src" "$lib" "${link[@]}" -lpthread -ldl -lm -o "$out/$name.asan"
  echo "+ $name under AddressSanitizer"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "$out/$name.asan" "${args[@]}" > "$out/$name.asan.out"
  "$cc" -std=$std -Wall -Wextra -Werror -g -I include "$src" "$lib" "${link[@]}" -lpthread -ldl -lm -o "$out/$name"
  echo "+ $name under valgrind memcheck"
  valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
    --show-possibly-lost=no "$out/$name" "${args[@]}" > "$out/$name.valgrind.out"
done
echo "sanitizers: 0 errors"
