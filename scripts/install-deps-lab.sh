#!/usr/bin/env bash
# Installs the Debian packages that appliances/linux/build.sh and scripts/lab need. Idempotent and
# non-interactive: packages already installed are not touched, and apt runs only when something
# is missing (apt-get update too, once). Run as root (CI and the development machines are root).
#
#   qemu-system-x86            the lab VM (TCG, emulated EPYC with SVM) and the QEMU peer inside it
#   linux-image-cloud-amd64    Debian's cloud kernel: the appliance's and the lab's kernel + modules
#   linux-headers-cloud-amd64  to build virtio_mmio_cmdline.ko for exactly that kernel
#   busybox-static             userspace of both initramfs images, the appliance root and the lab
#   e2fsprogs                  mke2fs -d (ext4 images without loop mounts), debugfs
#   cpio                       initramfs archives
#   lz4 xz-utils zstd          kernel payload decompression, appliance data
#   binutils gcc make libc6-dev  extracting/inspecting vmlinux, building the module and lab helpers
#   openssl                    deterministic incompressible appliance data (AES-CTR keystream)
#   kmod                       depmod/modinfo used by the kernel package scripts
#   jq                         reads and edits appliance.json and result JSON (host, and inside the lab via --bin)
# With --microvm-kernel also what appliances/linux/build-microvm-kernel.sh needs:
#   linux-source-6.1 bison flex libelf-dev bc
#
# Usage: scripts/install-deps-lab.sh [--microvm-kernel]
set -euo pipefail

PACKAGES=(
    qemu-system-x86
    linux-image-cloud-amd64
    linux-headers-cloud-amd64
    busybox-static
    e2fsprogs
    cpio
    lz4
    xz-utils
    zstd
    jq
    binutils
    gcc
    make
    libc6-dev
    openssl
    kmod
)

readonly MICROVM_KERNEL_PACKAGES=(linux-source-6.1 bison flex libelf-dev bc)

log() { printf 'install-deps-lab: %s\n' "$*" >&2; }

# A package counts as installed only in state "install ok installed" (not half-configured).
missing_packages() {
    local package
    for package in "${PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) != "install ok installed" ]]; then
            printf '%s\n' "$package"
        fi
    done
}

main() {
    local missing
    case ${1:-} in
        --microvm-kernel) PACKAGES+=("${MICROVM_KERNEL_PACKAGES[@]}") ;;
        "") ;;
        *) log "error: unknown argument '$1' (only --microvm-kernel)"; exit 2 ;;
    esac
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        log "all ${#PACKAGES[@]} packages are installed"
        return 0
    fi
    [[ $(id -u) == 0 ]] || { log "error: need root to install: ${missing[*]}"; exit 1; }
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The kernel package runs initramfs-tools hooks; they are not needed (we build our own
    # initramfs) but are harmless. --no-install-recommends keeps firmware and GUI bits out.
    timeout 600 apt-get update -q || { log "error: apt-get update failed (is the Debian mirror reachable?)"; exit 1; }
    timeout 1800 apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" ||
        { log "error: apt-get install failed for: ${missing[*]}"; exit 1; }
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || { log "error: still not installed: ${missing[*]}"; exit 1; }
    log "done"
}

main "$@"; exit  # exit here: bash reads scripts lazily, so an edit during a run cannot run stray text
