/* Raw libsrtp2 baseline for Benchmarks/run-calls.sh: protect + unprotect of PACKETS 20 ms PCMU packets (12-byte
 * RTP header + 160 payload bytes) with one send and one receive session (window 128), as FlitzMedia's SRTPSession
 * configures them, for profile 1 (AEAD_AES_256_GCM) or 2 (AES_CM_128_HMAC_SHA1_80). Prints nanoseconds per packet.
 * Usage: srtp-baseline PROFILE PACKETS */
#include <srtp2/srtp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static srtp_t session(int profile, srtp_ssrc_type_t type, unsigned int ssrc, unsigned char *key) {
    srtp_policy_t policy;
    memset(&policy, 0, sizeof policy);
    if (profile == 1) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy.rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy.rtcp);
    } else {
        srtp_crypto_policy_set_rtp_default(&policy.rtp);
        srtp_crypto_policy_set_rtp_default(&policy.rtcp);
    }
    policy.ssrc.type = type;
    policy.ssrc.value = ssrc;
    policy.key = key;
    policy.window_size = 128;
    srtp_t s = NULL;
    if (srtp_create(&s, &policy) != srtp_err_status_ok) { fprintf(stderr, "srtp_create failed\n"); exit(2); }
    return s;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: srtp-baseline PROFILE PACKETS\n"); return 2; }
    int profile = atoi(argv[1]);
    long packets = atol(argv[2]);
    if (srtp_init() != srtp_err_status_ok) return 2;
    unsigned char key[64];
    for (int i = 0; i < 64; i++) key[i] = (unsigned char)(i * 37 + 11);
    unsigned int ssrc = 0x12345678;
    srtp_t tx = session(profile, ssrc_specific, ssrc, key);
    srtp_t rx = session(profile, ssrc_any_inbound, 0, key);
    unsigned char packet[12 + 160 + SRTP_MAX_TRAILER_LEN];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long n = 0; n < packets; n++) {
        unsigned short seq = (unsigned short)n;
        unsigned int ts = (unsigned int)n * 160;
        packet[0] = 0x80; packet[1] = 0;
        packet[2] = seq >> 8; packet[3] = seq & 0xff;
        packet[4] = ts >> 24; packet[5] = ts >> 16; packet[6] = ts >> 8; packet[7] = ts;
        packet[8] = ssrc >> 24; packet[9] = ssrc >> 16; packet[10] = ssrc >> 8; packet[11] = ssrc;
        memset(packet + 12, 0xff, 160);
        int length = 172;
        if (srtp_protect(tx, packet, &length) != srtp_err_status_ok) { fprintf(stderr, "protect failed\n"); return 1; }
        if (srtp_unprotect(rx, packet, &length) != srtp_err_status_ok || length != 172) { fprintf(stderr, "unprotect failed\n"); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    printf("%.1f\n", ns / (double)packets);
    srtp_dealloc(tx);
    srtp_dealloc(rx);
    return 0;
}
