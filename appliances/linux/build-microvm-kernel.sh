#!/usr/bin/env bash
# Builds the "linux-microvm" appliance: the Linux appliance (same initrd and disk.img, hard-linked,
# so their chunks dedupe) with a minimal kernel compiled from Debian's linux-source-6.1:
# `make tinyconfig` + microvm-kernel/streamvm-microvm.config — virtio-mmio (with
# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), virtio-blk, ext4, 8250 console, PVH, KVM guest support, all
# built in; no modules, PCI or ACPI: a kernel that parses virtio_mmio.device= itself, for VMMs and
# tests that want no helper module. In the lab it booted in the same range as the cloud kernel
# (see README.md, "Measured").
#
# Output: out/appliances/linux-microvm/ (kernel = ELF vmlinux for PVH entry, initrd, disk.img,
# appliance.json). Source and objects are cached in out/microvm-kernel/ (about 1.3 GB); a rebuild
# with unchanged inputs does nothing. Needs linux-source-6.1 bison flex libelf-dev bc (see
# scripts/install-deps-lab.sh --microvm-kernel).
#
# Usage: appliances/linux/build-microvm-kernel.sh [--force]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export LOG_PREFIX=appliances/linux/build-microvm-kernel.sh
# shellcheck source=../../scripts/lib/common.sh
source "$repo/scripts/lib/common.sh"

readonly SOURCE_TARBALL=/usr/src/linux-source-6.1.tar.xz
readonly FRAGMENT="$here/microvm-kernel/streamvm-microvm.config"
cache="$repo/out/microvm-kernel"
base="$repo/out/appliances/linux"
out="$repo/out/appliances/linux-microvm"
force=0
[[ ${1:-} == --force ]] && force=1

main() {
    local start digest src
    start=$(now_ms)
    [[ -f $SOURCE_TARBALL ]] || die "$SOURCE_TARBALL missing: run scripts/install-deps-lab.sh --microvm-kernel (linux-source-6.1)"
    require_tool bison bison
    require_tool flex flex
    require_tool bc bc
    [[ -f /usr/include/libelf.h ]] || die "libelf-dev missing: run scripts/install-deps-lab.sh --microvm-kernel"
    # The initrd and disk come from the cloud-kernel appliance; build (or check) it first.
    "$here/build.sh"
    digest=$({
        dpkg-query -W -f='${Package} ${Version}\n' linux-source-6.1
        sha256sum "$FRAGMENT" "$0" "$base/initrd" "$base/disk.img" "$base/appliance.json"
    } | sha256sum | cut -d' ' -f1)
    if ((force == 0)) && [[ -f $out/.inputs && $(cat "$out/.inputs") == "$digest" ]]; then
        log "up to date: $out"
        return 0
    fi
    src="$cache/linux-source-6.1"
    if [[ ! -f $src/Makefile ]]; then
        log "unpacking $SOURCE_TARBALL into $cache"
        mkdir -p "$cache"
        tar -C "$cache" -xf "$SOURCE_TARBALL"
    fi
    log "configuring (tinyconfig + $(basename "$FRAGMENT"))"
    make -s -C "$src" tinyconfig >/dev/null
    (cd "$src" && scripts/kconfig/merge_config.sh -m .config "$FRAGMENT" >/dev/null)
    make -s -C "$src" olddefconfig
    # Every option of the fragment must have survived olddefconfig (a missing dependency drops it).
    local line option
    while read -r line; do
        [[ $line == CONFIG_* ]] || continue
        option=${line%%=*}
        if [[ $line == *=n ]]; then
            ! grep -q "^$option=" "$src/.config" || die "$option is still set in .config"
        else
            grep -qx "$line" "$src/.config" || die "$line did not survive olddefconfig (missing dependency?)"
        fi
    done <"$FRAGMENT"
    log "compiling vmlinux with $(nproc) jobs (about 12 CPU-minutes: ~7 min on 2 idle cores, 39 min measured under load 18)"
    make -s -C "$src" -j"$(($(nproc) + 1))" vmlinux >"$cache/build.log" 2>&1 ||
        { tail -n 40 "$cache/build.log" >&2; die "kernel build failed (log: $cache/build.log)"; }
    readelf -n "$src/vmlinux" | grep -q 'Unknown note type: (0x00000012)' || die "vmlinux has no PVH entry note"

    rm -rf "$out.work" && mkdir -p "$out.work"
    objcopy --strip-debug "$src/vmlinux" "$out.work/kernel"
    ln "$base/initrd" "$out.work/initrd" 2>/dev/null || cp "$base/initrd" "$out.work/initrd"
    ln "$base/disk.img" "$out.work/disk.img" 2>/dev/null || cp "$base/disk.img" "$out.work/disk.img"
    # Same boot settings as the cloud-kernel appliance, another name. No modules to load: the
    # initrd skips them for this kernel release.
    sed -e 's/"name": "linux"/"name": "linux-microvm"/' \
        -e "s/\"description\": \"[^\"]*\"/\"description\": \"Minimal microVM kernel from Debian's linux-source-6.1 (virtio-mmio, virtio-blk, ext4, 8250 built in), the linux appliance's initrd and root disk\"/" \
        "$base/appliance.json" >"$out.work/appliance.json"
    make -s -C "$src" kernelrelease >"$out.work/kernel-release"
    rm -rf "$out" && mv "$out.work" "$out"
    echo "$digest" >"$out/.inputs"
    log "done in $(( ($(now_ms) - start) / 1000 ))s: $out (kernel $(cat "$out/kernel-release"), $(du -h "$out/kernel" | cut -f1))"
}

main; exit  # exit here: bash reads scripts lazily, so an edit during a run cannot run stray text
