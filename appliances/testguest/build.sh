#!/bin/sh
# Builds the flat test guest with the system gcc and binutils. Output (outside git):
#   $OUT/testguest.bin   raw image, loaded at 1 MiB by `streamvm run` (kernelFormat "flat")
# Usage: appliances/testguest/build.sh [OUT]   (default: .build-appliances/testguest)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/.build-appliances/testguest}
mkdir -p "$out"
cflags="-O2 -ffreestanding -fno-builtin -fno-pic -fno-pie -fno-stack-protector -mno-red-zone -mgeneral-regs-only -fno-asynchronous-unwind-tables -nostdlib -Wall -Wextra -Werror"
gcc $cflags -c "$here/entry.S" -o "$out/entry.o"
gcc $cflags -c "$here/guest.c" -o "$out/guest.o"
ld -nostdlib -static -no-pie -z noexecstack -T "$here/linker.ld" -o "$out/testguest.elf" "$out/entry.o" "$out/guest.o"
objcopy -O binary "$out/testguest.elf" "$out/testguest.bin.tmp"
mv "$out/testguest.bin.tmp" "$out/testguest.bin"
echo "$out/testguest.bin"
