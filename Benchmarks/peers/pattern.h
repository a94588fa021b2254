/* The byte pattern the C load clients send and check the echo against: PERIOD bytes from
 * SplitMix64, then `extra` more that repeat its start (so a message that starts near the end of
 * the ring can be sent or compared in one piece). */
#ifndef PEERS_PATTERN_H
#define PEERS_PATTERN_H
#include <stdint.h>
#include <stdlib.h>

#define PERIOD 65536

static unsigned char *pattern_ring(long extra) {
    unsigned char *ring = malloc(PERIOD + extra);
    uint64_t state = 1;
    for (long i = 0; i < PERIOD; i++) {
        state += 0x9E3779B97F4A7C15ULL;
        uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        ring[i] = (unsigned char)(z ^ (z >> 31));
    }
    for (long i = 0; i < extra; i++) ring[PERIOD + i] = ring[i % PERIOD];
    return ring;
}
#endif
