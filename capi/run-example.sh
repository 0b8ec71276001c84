#!/usr/bin/env bash
# Builds the C ABI, compiles capi/examples/example.c against the shared and the static library,
# runs both, and runs the shared one under valgrind (leaks and invalid reads or writes fail).
set -euo pipefail
cd "$(dirname "$0")/.."
# The workspace build with its test targets resolves features as `cargo test --workspace` does, so
# it reuses that build (a build of this package alone would rebuild its dependencies).
cargo build --workspace --lib --bins --tests --examples --quiet
out=target/c-example
mkdir -p "$out"
cc -std=c11 -Wall -Wextra -Werror -O1 -g capi/examples/example.c -Icapi/include \
  -Ltarget/debug -lomendb_c -lm -pthread -o "$out/example"
cc -std=c11 -Wall -Wextra -Werror -O1 -g capi/examples/example.c -Icapi/include \
  target/debug/libomendb_c.a -lpthread -ldl -lm -o "$out/example-static"
run() {
  local dir
  dir=$(mktemp -d)
  LD_LIBRARY_PATH=target/debug "$@" "$dir/a" "$dir/b"
  rm -rf "$dir"
}
run "$out/example"
run "$out/example-static"
run valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-possibly-lost=no \
  "$out/example"
