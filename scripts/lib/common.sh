# shellcheck shell=bash
# Shared helpers for the appliance recipe (appliances/linux/build.sh) and the hardware lab
# (scripts/lab). Sourced, never run. Everything here works from Debian packages only.

# Print a message to stderr, prefixed with the calling script's name.
log() { printf '%s: %s\n' "${LOG_PREFIX:-${0##*/}}" "$*" >&2; }

# Print an error and exit; every failure names what to do next where we can.
die() { log "error: $*"; exit 1; }

# Fail early with the package to install when a tool is missing.
require_tool() { # <tool> <debian-package>
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found: run scripts/install-deps-lab.sh (Debian package $2)"
}

# Seconds since the epoch with millisecond precision (date +%s%3N is GNU coreutils).
now_ms() { date +%s%3N; }

# The kernel release of Debian's cloud kernel (e.g. 6.1.0-56-cloud-amd64). We follow the
# linux-image-cloud-amd64 metapackage so an apt upgrade moves appliance and lab together; the
# running host kernel is irrelevant (this host's kernel is not Debian's).
cloud_kernel_release() {
    local depends release
    depends=$(dpkg-query -W -f='${Depends}' linux-image-cloud-amd64 2>/dev/null) ||
        die "linux-image-cloud-amd64 is not installed: run scripts/install-deps-lab.sh"
    release=$(printf '%s\n' "$depends" | grep -o 'linux-image-[0-9][^ ,]*-cloud-amd64' | head -n1)
    release=${release#linux-image-}
    [[ -n $release ]] || die "cannot read the kernel release from linux-image-cloud-amd64's Depends: '$depends'"
    [[ -f /boot/vmlinuz-$release && -d /lib/modules/$release ]] ||
        die "kernel $release is not unpacked in /boot and /lib/modules: reinstall linux-image-$release"
    printf '%s\n' "$release"
}

# Extract the uncompressed ELF vmlinux from a bzImage. The x86 boot protocol (Documentation/
# x86/boot.rst) records where the compressed payload starts and how long it is: setup_sects at
# 0x1f1, payload_offset at 0x248 (relative to the protected-mode code, which follows the
# (setup_sects + 1) * 512 bytes of real-mode setup), payload_length at 0x24c. That is exact,
# unlike extract-vmlinux's scan for compression magic. Debian's cloud kernel uses LZ4 (legacy
# frame); gzip, xz and zstd are handled too in case Debian changes CONFIG_KERNEL_*.
extract_vmlinux() { # <bzImage> <output vmlinux>
    local bzimage=$1 out=$2 setup_sects payload_offset payload_length start magic tmp
    setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$bzimage" | tr -d ' ')
    payload_offset=$(od -An -tu4 -j $((0x248)) -N4 "$bzimage" | tr -d ' ')
    payload_length=$(od -An -tu4 -j $((0x24c)) -N4 "$bzimage" | tr -d ' ')
    start=$(( (setup_sects + 1) * 512 + payload_offset ))
    magic=$(od -An -tx1 -j "$start" -N4 "$bzimage" | tr -d ' ')
    tmp="$out.tmp.$$"
    payload() { dd if="$bzimage" iflag=skip_bytes,count_bytes skip="$start" count="$1" bs=1M status=none; }
    # Kbuild appends the uncompressed size as 4 bytes (size_append) after lz4, xz and zstd
    # streams, which their decompressors reject as trailing garbage; gzip carries it itself.
    case $magic in
        02214c18) payload $((payload_length - 4)) | lz4 -dc >"$tmp" ;;
        1f8b*)    payload "$payload_length" | gzip -dc >"$tmp" ;;
        fd377a58) payload $((payload_length - 4)) | xz -dc >"$tmp" ;;
        28b52ffd) payload $((payload_length - 4)) | zstd -dc >"$tmp" ;;
        *) die "unknown kernel payload compression (magic $magic) in $bzimage" ;;
    esac || { rm -f "$tmp"; die "decompressing the kernel payload of $bzimage failed"; }
    [[ $(od -An -tx1 -N4 "$tmp" | tr -d ' ') == 7f454c46 ]] || { rm -f "$tmp"; die "payload of $bzimage is not an ELF file"; }
    # PVH entry needs the XEN_ELFNOTE_PHYS32_ENTRY note (type 0x12); without it QEMU/our VMM
    # cannot enter the ELF directly.
    readelf -n "$tmp" | grep -q 'Unknown note type: (0x00000012)' ||
        { rm -f "$tmp"; die "$bzimage has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"; }
    mv -f "$tmp" "$out"
}

# Print the given modules and everything they depend on, dependencies first, each once, as paths
# relative to /lib/modules/<release>. Uses modules.dep, so built-in (=y) features need no module.
module_closure() { # <release> <module name>...
    local release=$1; shift
    local dep=/lib/modules/$release/modules.dep
    [[ -f $dep ]] || die "$dep missing"
    awk -v want="$*" '
        BEGIN { n = split(want, w, " ") }
        {   path = $1; sub(/:$/, "", path)
            name = path; sub(/.*\//, "", name); sub(/\.ko(\.[a-z]+)?$/, "", name); gsub(/-/, "_", name)
            deps[name] = ""; file[name] = path
            for (i = 2; i <= NF; i++) deps[name] = deps[name] " " $i
        }
        function visit(name,   d, k, i, dn) {
            if (seen[name]++) return
            if (!(name in file)) { print "missing module " name > "/dev/stderr"; failed = 1; return }
            k = split(deps[name], d, " ")
            # modules.dep lists dependencies nearest-first; load the farthest first.
            for (i = k; i >= 1; i--) { dn = d[i]; sub(/.*\//, "", dn); sub(/\.ko(\.[a-z]+)?$/, "", dn); gsub(/-/, "_", dn); visit(dn) }
            print file[name]
        }
        END { for (i = 1; i <= n; i++) { m = w[i]; gsub(/-/, "_", m); visit(m) } exit failed }
    ' "$dep"
}

# Copy an executable and the shared libraries `ldd` lists for it into a root directory, at the
# same paths, so it runs there unchanged (including the ELF interpreter). Static binaries copy alone.
copy_with_libraries() { # <binary> <root dir> [<destination path inside root>]
    local binary=$1 root=$2 dest=${3:-} lib
    [[ -x $binary ]] || die "$binary is not an executable file"
    dest=${dest:-$(readlink -f "$binary")}
    install -D -m 0755 "$binary" "$root$dest"
    # ldd prints "name => /path (addr)" or "/lib64/ld-linux-x86-64.so.2 (addr)"; "not a dynamic
    # executable" (exit 1) means static.
    if ldd "$binary" >/dev/null 2>&1; then
        ldd "$binary" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
            [[ -e "$root$lib" ]] && continue
            install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
        done
        if ldd "$binary" | grep -q 'not found'; then
            die "$binary needs libraries this machine lacks: $(ldd "$binary" | grep 'not found' | tr -s ' \n' ' ')"
        fi
    fi
}

# Set every file's timestamps to a fixed moment, so cpio archives and ext4 images built from the
# same inputs are byte-identical (content-addressed chunks then dedupe across rebuilds).
normalize_times() { # <dir>
    find "$1" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-1700000000}" {} +
}

# Pack a directory as an uncompressed newc cpio (initramfs). Uncompressed on purpose: the guest
# kernel then only copies it, which is much cheaper than decompressing under TCG in the lab.
pack_initramfs() { # <dir> <output>
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) >"$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
}

# Build an ext4 image from a directory without mounting anything (mke2fs -d), reproducibly:
# fixed UUID, hash seed and creation time.
make_ext4_image() { # <dir> <output> <size MiB> <label> [extra mke2fs options...]
    local dir=$1 out=$2 size=$3 label=$4; shift 4
    rm -f "$out.tmp.$$"
    E2FSPROGS_FAKE_TIME=${SOURCE_DATE_EPOCH:-1700000000} mke2fs -q -F -t ext4 -L "$label" \
        -U 5f4e3a2b-1c0d-4e9f-8a7b-6c5d4e3f2a1b -E root_owner=0:0,hash_seed=0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9 \
        "$@" -d "$dir" "$out.tmp.$$" "${size}M" >/dev/null || { rm -f "$out.tmp.$$"; die "mke2fs failed for $out"; }
    # mke2fs 1.47.0 copies each file's ctime, which no tool can set; pin ctime and creation time
    # afterwards with debugfs (one batch, so it costs well under a second for a few hundred files).
    (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | sed 's|^\.||') | awk -v t="@${SOURCE_DATE_EPOCH:-1700000000}" '
        { printf "sif \"%s\" ctime %s\nsif \"%s\" ctime_extra 0\nsif \"%s\" crtime %s\nsif \"%s\" crtime_extra 0\n", $0, t, $0, $0, t, $0 }
        END { printf "sif / ctime %s\nsif / crtime %s\n", t, t }' >"$out.debugfs.$$"
    E2FSPROGS_FAKE_TIME=${SOURCE_DATE_EPOCH:-1700000000} debugfs -w -f "$out.debugfs.$$" "$out.tmp.$$" >/dev/null 2>"$out.debugfs.err.$$" ||
        { cat "$out.debugfs.err.$$" >&2; rm -f "$out.tmp.$$" "$out.debugfs."*"$$"; die "debugfs could not pin timestamps in $out"; }
    rm -f "$out.debugfs.$$" "$out.debugfs.err.$$"
    mv -f "$out.tmp.$$" "$out"
}
