#!/bin/sh
# Builds the flat test guest with the system gcc and binutils. Output (outside git):
#   $OUT/testguest.bin        raw image, loaded at 1 MiB (kernelFormat "flat")
#   $OUT/appliance-hello/     appliance directory: `streamvm run $OUT/appliance-hello`
#   $OUT/appliance-blk/       the same with a patterned disk.img for the virtio-blk test
#   $OUT/appliance-snapshot/  mode=snapshot: `streamvm snapshot --at-ready` then `streamvm run` resumes it
#   $OUT/appliance-ticker/    mode=ticker: runs until stopped; pause, snapshot and resume it at any moment
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

# Appliance directories for `streamvm run` (appliance.json + kernel [+ disk.img]).
gcc -O2 -Wall -o "$out/mkdisk" "$here/mkdisk.c"
for mode in hello blk snapshot ticker; do
    dir="$out/appliance-$mode"
    mkdir -p "$dir"
    cp "$out/testguest.bin" "$dir/kernel"
    cat > "$dir/appliance.json" <<JSON
{"name": "testguest-$mode", "version": "1", "memoryMiB": 64, "vcpus": 1, "kernelFormat": "flat",
 "kernelCommandLine": "mode=$mode", "readyMarker": "STREAMVM-READY"}
JSON
done
"$out/mkdisk" "$out/appliance-blk/disk.img" 2048
echo "$out/testguest.bin"
