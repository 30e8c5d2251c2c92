/* Host tool: writes the disk image the `mode=blk` test guest expects, where byte i of sector s is
 * (s * 7 + i) mod 256. Usage: mkdisk <path> <sectors> */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s <path> <sectors>\n", argv[0]); return 2; }
    long sectors = atol(argv[2]);
    FILE *file = fopen(argv[1], "wb");
    if (!file || sectors <= 0) { perror(argv[1]); return 1; }
    unsigned char sector[512];
    for (long s = 0; s < sectors; s++) {
        for (int i = 0; i < 512; i++) sector[i] = (unsigned char)(s * 7 + i);
        if (fwrite(sector, 1, sizeof sector, file) != sizeof sector) { perror("fwrite"); return 1; }
    }
    return fclose(file) == 0 ? 0 : 1;
}
