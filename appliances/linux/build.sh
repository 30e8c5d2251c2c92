#!/usr/bin/env bash
# Builds the Linux appliance from Debian packages only (see README.md beside this file):
#   kernel        ELF vmlinux of linux-image-cloud-amd64, for PVH entry
#   bzImage       the same kernel as Debian ships it (for bzImage boot)
#   initrd        busybox-static initramfs: loads virtio modules, mounts the ext4 root, switches to it
#   disk.img      ext4 root (mke2fs -d, no loop mounts): busybox, a small application and its data
#   appliance.json
# Output goes to out/appliances/linux/ (gitignored) unless --out says otherwise. Re-running with
# unchanged inputs (these files, the kernel and busybox package versions) does nothing.
#
# Usage: appliances/linux/build.sh [--out DIR] [--force]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export LOG_PREFIX=appliances/linux/build.sh
# shellcheck source=../../scripts/lib/common.sh
source "$repo/scripts/lib/common.sh"

# Appliance identity and boot settings, written to appliance.json.
readonly APPLIANCE_NAME=linux
readonly APPLIANCE_VERSION=1.0.0
readonly MEMORY_MIB=256
readonly VCPUS=1
# Kernel command line (the VMM appends its virtio_mmio.device= entries; see README.md):
#  console=ttyS0                  the 8250 UART at 0x3f8, IRQ 4
#  reboot=t panic=-1              a reboot (and a panic, at once) is a triple fault: KVM reports
#                                 KVM_EXIT_SHUTDOWN, QEMU -no-reboot exits, our VMM ends the run.
#                                 Not reboot=k: with no i8042 (QEMU microvm) Linux falls through to
#                                 a real-mode jump to the firmware, which boots the guest again, forever.
#  pci=off                        there is no PCI bus; skip probing it
#  i8042.*                        no mouse/mux/PnP probing of the i8042 (only its reset line is used)
#  noxsave clearcpuid=...         needed on the PVM development host (its KVM fails to emulate
#                                 xrstor, clac/stac, popcnt, cmpxchg16b in guest kernel code, see
#                                 DESIGN.md); harmless on hardware and in the lab, where it only
#                                 hides XSAVE/AVX, SMAP, POPCNT and CX16 from a busybox workload that
#                                 does not use them. Kept so one signed appliance boots the same way
#                                 on every host and QEMU and our VMM see the same guest.
#  quiet                          kernel messages only from warnings up: every console byte is a
#                                 VM exit (an 8250 write), which is cheap on hardware but costs
#                                 about a minute of boot in the lab's nested KVM. Drop it to debug.
readonly KERNEL_CMDLINE="console=ttyS0 quiet reboot=t panic=-1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd noxsave clearcpuid=smap,popcnt,cx16"
readonly DISK_MIB=64
# Modules the initramfs loads (ext4, jbd2, crc16, crc32c are built into Debian's cloud kernel;
# virtio, virtio_ring, virtio_mmio and virtio_blk are =m). Dependencies are resolved from modules.dep.
readonly INITRD_MODULES="virtio_mmio virtio_blk"

out="$repo/out/appliances/linux"
force=0
while (($#)); do
    case $1 in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

check_tools() {
    require_tool dpkg-query dpkg
    require_tool lz4 lz4
    require_tool readelf binutils
    require_tool cpio cpio
    require_tool mke2fs e2fsprogs
    require_tool openssl openssl
    require_tool xz xz-utils
    require_tool make make
    require_tool gcc gcc
    [[ -x /bin/busybox ]] || die "/bin/busybox missing: run scripts/install-deps-lab.sh (busybox-static)"
    ! ldd /bin/busybox >/dev/null 2>&1 || die "/bin/busybox is dynamically linked: install busybox-static, not busybox"
}

# A digest of everything the outputs depend on; equal digest means nothing to do.
input_digest() { # <kernel release>
    {
        (cd "$repo" && find appliances/linux scripts/lib -type f ! -name '*.md' | LC_ALL=C sort | xargs sha256sum)
        dpkg-query -W -f='${Package} ${Version}\n' "linux-image-$1" busybox-static
        echo "$KERNEL_CMDLINE $MEMORY_MIB $VCPUS $DISK_MIB"
    } | sha256sum | cut -d' ' -f1
}

# virtio_mmio_cmdline.ko: registers the devices named by virtio_mmio.device= (see its source).
build_cmdline_module() { # <release> <work dir>
    local release=$1 work=$2 build=/lib/modules/$1/build
    [[ -f $build/Makefile ]] || die "kernel headers for $release missing: run scripts/install-deps-lab.sh (linux-headers-$release)"
    mkdir -p "$work/kmod"
    cp "$here/virtio-mmio-cmdline/virtio_mmio_cmdline.c" "$here/virtio-mmio-cmdline/Kbuild" "$work/kmod/"
    make -s -C "$build" M="$work/kmod" modules >"$work/kmod/build.log" 2>&1 ||
        { cat "$work/kmod/build.log" >&2; die "building virtio_mmio_cmdline.ko failed"; }
    # The build-id hashes the build directory (--out moves it); nothing needs it, so drop it and
    # the initrd is byte-identical wherever it is built.
    strip --strip-debug --remove-section=.note.gnu.build-id "$work/kmod/virtio_mmio_cmdline.ko"
}

# Busybox plus a symlink per applet, so scripts run without `busybox --install` at boot.
install_busybox() { # <root dir>
    local root=$1 applet
    install -D -m 0755 /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
    done
}

build_initrd() { # <release> <work dir>
    local release=$1 work=$2 root=$2/initrd-root module
    local modules=$root/lib/modules/$release
    mkdir -p "$root"/{dev,proc,sys,newroot} "$modules"
    install_busybox "$root"
    : >"$modules/load-order"
    # shellcheck disable=SC2086 # a list of module names
    for module in $(module_closure "$release" $INITRD_MODULES); do
        install -D -m 0644 "/lib/modules/$release/$module" "$modules/$module"
        # Drop the appended signature: not required (MODULE_SIG_FORCE is off), and checking it
        # is RSA work on the boot path.
        strip --strip-debug "$modules/$module"
        echo "$module" >>"$modules/load-order"
    done
    install -m 0644 "$work/kmod/virtio_mmio_cmdline.ko" "$modules/"
    install -m 0755 "$here/initramfs/init" "$root/init"
    normalize_times "$root"
    pack_initramfs "$root" "$work/initrd"
}

# Deterministic data for the application: incompressible blobs (AES-CTR keystream of zeros, like
# media or compressed files), text and a CSV table (compressible, like documents and logs).
generate_data() { # <root dir>
    local root=$1 i
    mkdir -p "$root/srv/assets" "$root/srv/text" "$root/opt/app/share"
    for i in $(seq -f %02g 0 15); do
        head -c $((1 << 20)) /dev/zero |
            openssl enc -aes-128-ctr -nosalt -K "000102030405060708090a0b0c0d0e$i" -iv 00000000000000000000000000000000 >"$root/srv/assets/blob-$i.bin"
    done
    # Text from a fixed vocabulary and a linear congruential generator (same bytes everywhere).
    for i in $(seq -f %02g 0 7); do
        awk -v seed="$((10#$i + 1))" 'BEGIN {
            split("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo consequat stream boot chunk cache kernel page disk vector cluster", v, " ")
            n = length(v); x = seed; bytes = 0
            while (bytes < 524288) {
                line = ""
                for (j = 0; j < 12; j++) { x = (x * 1103515245 + 12345) % 2147483648; line = line v[int(x / 65536) % n + 1] " " }
                print line; bytes += length(line) + 1
            }
        }' >"$root/srv/text/doc-$i.txt"
    done
    awk 'BEGIN { print "id,region,value"; x = 7
        for (i = 0; i < 60000; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "%d,r%d,%d\n", i, x % 17, x % 1000 } }' >"$root/srv/table.csv"
    tr ' ' '\n' <"$root/srv/text/doc-07.txt" | LC_ALL=C sort -u | gzip -9n >"$root/opt/app/share/words.gz"
    cat "$root"/srv/text/doc-0[4-7].txt | xz -6 -T1 >"$root/opt/app/share/corpus.xz"
}

build_disk() { # <work dir>
    local work=$1 root=$1/disk-root
    mkdir -p "$root"/{dev,proc,sys,tmp,run,root,etc}
    cp -a "$here/rootfs/." "$root/"
    install_busybox "$root"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'streamvm-linux\n' >"$root/etc/hostname"
    generate_data "$root"
    smoke_test_workload "$root" "$work"
    normalize_times "$root"
    make_ext4_image "$root" "$work/disk.img" "$DISK_MIB" streamvm-root
}

# Runs the application's start and session on this host in a chroot of a hard-linked copy of the
# root (busybox is static, so it runs here), so a missing applet or a typo fails the build instead
# of a guest boot in the lab minutes later. Writes go to the copy's own /tmp, not the image.
smoke_test_workload() { # <root dir> <work dir>
    local root=$1 test=$2/smoke-root
    rm -rf "$test"
    cp -al "$root" "$test"
    rm -rf "$test/tmp" && mkdir -m 1777 "$test/tmp"
    if ! chroot "$test" /bin/sh -c 'export PATH=/bin:/opt/app/bin THINK_TIME=0; app-start && app-query && app-session' >"$2/smoke.log" 2>&1 ||
        grep -q FAILED "$2/smoke.log"; then
        cat "$2/smoke.log" >&2
        die "the appliance workload failed in a chroot on this host (above)"
    fi
    rm -rf "$test"
}

write_appliance_json() { # <work dir>
    cat >"$1/appliance.json" <<JSON
{
  "name": "$APPLIANCE_NAME",
  "version": "$APPLIANCE_VERSION",
  "description": "Debian cloud kernel $release, busybox initramfs, ext4 root with a small file-and-program workload",
  "memoryMiB": $MEMORY_MIB,
  "vcpus": $VCPUS,
  "kernelCommandLine": "$KERNEL_CMDLINE",
  "readyMarker": "STREAMVM-READY",
  "kernelFormat": "linux"
}
JSON
}

main() {
    local start digest work
    start=$(now_ms)
    check_tools
    release=$(cloud_kernel_release)
    digest=$(input_digest "$release")
    if ((force == 0)) && [[ -f $out/.inputs && $(cat "$out/.inputs") == "$digest" ]]; then
        log "up to date: $out (kernel $release)"
        return 0
    fi
    log "building the Linux appliance with kernel $release into $out"
    work="$out.work"
    rm -rf "$work"
    mkdir -p "$work" "$out"
    extract_vmlinux "/boot/vmlinuz-$release" "$work/kernel"
    cp "/boot/vmlinuz-$release" "$work/bzImage"
    build_cmdline_module "$release" "$work"
    build_initrd "$release" "$work"
    build_disk "$work"
    write_appliance_json "$work"
    # Replace the outputs, then record the inputs: an interrupted build is rebuilt next time.
    rm -f "$out/.inputs"
    local f
    for f in kernel bzImage initrd disk.img appliance.json; do mv -f "$work/$f" "$out/$f"; done
    echo "$release" >"$out/kernel-release"
    rm -rf "$work"
    echo "$digest" >"$out/.inputs"
    log "done in $(( ($(now_ms) - start) / 1000 )).$(( ($(now_ms) - start) % 1000 / 100 ))s: $(cd "$out" && du -h kernel bzImage initrd disk.img | tr '\t\n' ': ')"
}

main; exit  # exit here: bash reads scripts lazily, so an edit during a run cannot run stray text
