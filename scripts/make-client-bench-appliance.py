#!/usr/bin/env python3
"""Writes the appliance `streamvm bench client` was measured with (BENCHMARKS.md, client section):
a 64 MiB disk of 64 KiB chunks in a fixed pattern of eight: three random (incompressible, like
packed binaries), three text-like (compress about 4x), one all zero (never stored or sent), one
half random / half zero. Usage: make-client-bench-appliance.py <out-dir>
"""
import os
import random
import sys

CHUNK = 64 * 1024
CHUNKS = 1024
WORDS = [b"kernel", b"module", b"/usr/lib/x86_64-linux-gnu/", b"libc.so.6", b"systemd", b"appliance", b"config"]


def chunk(index: int, rng: random.Random) -> bytes:
    kind = index % 8
    if kind in (0, 1, 2):
        return os.urandom(CHUNK)
    if kind in (3, 4, 5):
        text = bytearray()
        while len(text) < CHUNK:
            text += rng.choice(WORDS) + b" " + str(rng.randint(0, 99999)).encode() + b"\n"
        return bytes(text[:CHUNK])
    if kind == 6:
        return bytes(CHUNK)
    return os.urandom(CHUNK // 2) + bytes(CHUNK // 2)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(3)
    with open(os.path.join(out, "disk.img.tmp"), "wb") as disk:
        for index in range(CHUNKS):
            disk.write(chunk(index, rng))
        disk.flush()
        os.fsync(disk.fileno())
    os.rename(os.path.join(out, "disk.img.tmp"), os.path.join(out, "disk.img"))
    with open(os.path.join(out, "appliance.json"), "w") as config:
        config.write('{"name":"bench","version":"1.0","memoryMiB":64,"vcpus":1,"readyMarker":"STREAMVM-READY"}\n')


if __name__ == "__main__":
    main()
