#!/usr/bin/env bash
# cmake --install into a scratch prefix: the four programs (each says its version), libkeel
# static and shared with its headers, and a pkg-config file a program really builds against:
# one linked to the shared library through pkg-config, one to the static archives.
#
#   test_install.sh BUILD_DIR CC [SANITIZER_FLAGS]
set -euo pipefail
build=${1:?usage: test_install.sh BUILD_DIR CC [SANITIZER_FLAGS]}
cc=${2:?usage: test_install.sh BUILD_DIR CC [SANITIZER_FLAGS]}
san=${3:-}
command -v pkg-config >/dev/null || { echo "SKIP: pkg-config is not installed"; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-install.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cmake --install "$build" --prefix "$dir/usr" >"$dir/install.log"
for b in keeld keelctl keel-bench keel-gateway; do
  [ -x "$dir/usr/bin/$b" ] || { echo "no bin/$b"; exit 1; }
done
"$dir/usr/bin/keeld" --version | grep -Eq '^keeld [0-9]+\.[0-9]+\.[0-9]+$'
"$dir/usr/bin/keel-bench" --version | grep -Eq '^keel-bench [0-9]'
"$dir/usr/bin/keelctl" --version | grep -q '^keelctl version: '
"$dir/usr/bin/keel-gateway" --version | grep -Eq '^keel-gateway [0-9]'
pc=$(find "$dir/usr" -name libkeel.pc)
[ -n "$pc" ] || { echo "no libkeel.pc"; exit 1; }
libdir=$(dirname "$(dirname "$pc")")
for f in libkeel.a libkeel_tls.a libkeel_proto.a libkeel.so; do
  [ -e "$libdir/$f" ] || { echo "no $f in $libdir"; exit 1; }
done
for h in keel.h err.h keel.pb-c.h; do
  [ -f "$dir/usr/include/keel/$h" ] || { echo "no include/keel/$h"; exit 1; }
done
cat >"$dir/prog.c" <<'CEOF'
#include <stdio.h>
#include <string.h>
#include <keel.h>
int main(void)
{
    /* No member runs: the open succeeds (dialling is lazy) and the error table answers. */
    struct keel_options o = {.endpoints = "127.0.0.1:1", .dial_timeout_ms = 100};
    struct keel *k = NULL;
    if (keel_open(&k, &o) != 0)
        return 2;
    keel_close(k);
    printf("%s\n", keel_strerror(KEEL_ENOTLEADER));
    return 0;
}
CEOF
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
"$cc" $san $(pkg-config --cflags libkeel) "$dir/prog.c" -o "$dir/prog-shared" \
  $(pkg-config --libs libkeel)
[ "$(LD_LIBRARY_PATH="$libdir" "$dir/prog-shared")" = "not the leader" ] || { echo "shared: wrong answer"; exit 1; }
# shellcheck disable=SC2046
"$cc" $san $(pkg-config --cflags libkeel) "$dir/prog.c" -o "$dir/prog-static" \
  "$libdir/libkeel.a" "$libdir/libkeel_tls.a" "$libdir/libkeel_proto.a" \
  $(pkg-config --libs libprotobuf-c libuv libssl libcrypto) -lpthread
[ "$("$dir/prog-static")" = "not the leader" ] || { echo "static: wrong answer"; exit 1; }
echo PASS
