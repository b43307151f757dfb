/* The raw-primitive baseline for the attachment throughput run (Benchmarks/run-media.sh): libsodium's
 * XChaCha20-Poly1305-IETF sealing and opening a buffer in 64 KiB chunks, exactly the work attachments.md 2.3
 * does per chunk, with no file or network I/O. Prints the median MiB/s of ROUNDS rounds for each direction.
 * Build: cc -O2 xchacha-baseline.c -lsodium. Usage: xchacha-baseline MIB ROUNDS */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 65536

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 50;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (sodium_init() < 0 || mib == 0 || rounds <= 0 || rounds > 100) return 2;
    size_t size = mib * 1024 * 1024, chunks = (size + CHUNK - 1) / CHUNK;
    unsigned char *plain = malloc(size), *sealed = malloc(size + chunks * 16), *opened = malloc(size);
    unsigned char key[32], nonce[24];
    if (!plain || !sealed || !opened) return 2;
    randombytes_buf(plain, size);
    randombytes_buf(key, sizeof key);
    randombytes_buf(nonce, sizeof nonce);
    double seal[100], open[100];
    for (int r = 0; r < rounds; r++) {
        double t0 = now();
        for (size_t i = 0; i < chunks; i++) {
            size_t n = (i + 1) * CHUNK <= size ? CHUNK : size - i * CHUNK;
            memcpy(nonce + 19, &i, 4);
            nonce[23] = i == chunks - 1;
            crypto_aead_xchacha20poly1305_ietf_encrypt(sealed + i * (CHUNK + 16), NULL, plain + i * CHUNK, n, NULL, 0, NULL, nonce, key);
        }
        double t1 = now();
        for (size_t i = 0; i < chunks; i++) {
            size_t n = (i + 1) * CHUNK <= size ? CHUNK : size - i * CHUNK;
            memcpy(nonce + 19, &i, 4);
            nonce[23] = i == chunks - 1;
            if (crypto_aead_xchacha20poly1305_ietf_decrypt(opened + i * CHUNK, NULL, NULL, sealed + i * (CHUNK + 16), n + 16, NULL, 0, nonce, key) != 0) return 1;
        }
        double t2 = now();
        seal[r] = mib / (t1 - t0);
        open[r] = mib / (t2 - t1);
    }
    if (memcmp(plain, opened, size) != 0) return 1;
    qsort(seal, rounds, sizeof(double), by_value);
    qsort(open, rounds, sizeof(double), by_value);
    printf("raw XChaCha20-Poly1305 seal (libsodium, 64 KiB chunks): median %.0f MiB/s over %d rounds of %zu MiB\n", seal[rounds / 2], rounds, mib);
    printf("raw XChaCha20-Poly1305 open (libsodium, 64 KiB chunks): median %.0f MiB/s over %d rounds of %zu MiB\n", open[rounds / 2], rounds, mib);
    return 0;
}
