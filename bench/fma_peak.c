/* The CPU's peak float32 rate, measured: a thread runs independent fused multiply-adds on registers only (no memory
   traffic, no dependency stalls), so its rate is the FMA units' width x count x the clock of the core. No convolution
   can beat that rate times the cores. bench/cpu_inference.py compiles it (cc -O2 -march=native -shared -fPIC -pthread)
   and calls fma_peak() through ctypes on one thread, in the same rounds as the models. AVX-512 where the compiler
   targets it, else AVX2. */
#include <immintrin.h>
#include <pthread.h>

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define CHAINS 24  /* 24 of the 32 zmm registers: enough independent chains to cover 2 units x 4-cycle latency */
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#elif defined(__FMA__)
typedef __m256 vec;
#define LANES 8
#define CHAINS 12  /* 12 of the 16 ymm registers: 2 units x 4-5 cycles of latency need 8-10 */
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#else
#error "fma_peak needs FMA (AVX2) or AVX-512"
#endif

static volatile float sink;

static void *chains(void *arg) {
    long iterations = *(long *)arg;
    vec acc[CHAINS], b = SET1(0.9999999f), c = SET1(1e-7f);
    for (int k = 0; k < CHAINS; k++) acc[k] = SET1((float)k);
    for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 32
        for (int k = 0; k < CHAINS; k++) acc[k] = FMA(acc[k], b, c);  /* unrolled: every chain in its own register */
    }
    float total = 0, lanes[LANES];
    for (int k = 0; k < CHAINS; k++) { *(vec *)lanes = acc[k]; total += lanes[0]; }
    sink = total;  /* the result is used: the loop cannot be removed */
    return 0;
}

/* FLOPs that fma_peak(iterations, threads) computes: 2 per lane per FMA. */
double fma_flops(long iterations, int threads) { return 2.0 * LANES * CHAINS * (double)iterations * threads; }

/* Run `iterations` rounds of CHAINS FMAs on each of `threads` threads; returns 0 on success. */
int fma_peak(long iterations, int threads) {
    pthread_t ids[256];
    if (threads < 1 || threads > 256) return 1;
    for (int t = 0; t < threads; t++) if (pthread_create(&ids[t], 0, chains, &iterations)) return 2;
    for (int t = 0; t < threads; t++) pthread_join(ids[t], 0);
    return 0;
}
