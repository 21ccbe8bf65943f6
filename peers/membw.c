/* membw.c - single-thread memory bandwidth limits.
 * Build: gcc -O3 -o membw membw.c      (-O3 like Gloo Release, no -march: same ISA level as the
 *        default Gloo build, i.e. SSE2 auto-vectorisation for the add loop)
 * Usage: membw [seconds]   (time per kernel and size, default 1; at least 5 reps each)
 * For each buffer size S in {1 MiB, 64 MiB, 256 MiB}:
 *   memcpy : memcpy(dst, src, S)               -> reports S / t  (GB/s, 1e9)
 *   add    : a[i] += b[i] over S bytes of float -> reports S / t  (the
 *            reduction step of an in-place sum allreduce)
 * Buffers are pre-faulted; each kernel is repeated for >= `seconds` (at least 5
 * reps); min / median time per rep are reported as max / median bandwidth.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}
static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

__attribute__((noinline)) static void add(float *restrict a, const float *restrict b, size_t n) {
  for (size_t i = 0; i < n; i++) a[i] += b[i];
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 1.0;
  if (!(secs > 0 && secs <= 3600)) { fprintf(stderr, "membw: seconds must be in (0, 3600]\n"); return 2; }
  size_t sizes[] = {1UL << 20, 64UL << 20, 256UL << 20};
  static double t[200000];
  printf("%-8s %10s %12s %12s %8s\n", "kernel", "size", "best GB/s", "median GB/s", "reps");
  for (int k = 0; k < 2; k++) {
    for (int s = 0; s < 3; s++) {
      size_t S = sizes[s];
      char *src = aligned_alloc(4096, S), *dst = aligned_alloc(4096, S);
      for (size_t i = 0; i < S / 4; i++) { ((float *)src)[i] = 1.0f; ((float *)dst)[i] = 0.0f; }
      volatile float sink = 0;
      int reps = 0;
      double start = now();
      while ((now() - start < secs || reps < 5) && reps < 200000) {
        double t0 = now();
        if (k == 0) memcpy(dst, src, S);
        else add((float *)dst, (const float *)src, S / 4);
        t[reps++] = now() - t0;
        sink += ((float *)dst)[reps % (S / 4)];
      }
      qsort(t, reps, sizeof(double), cmpd);
      printf("%-8s %7zu MiB %12.2f %12.2f %8d\n", k == 0 ? "memcpy" : "add", S >> 20,
             S / t[0] / 1e9, S / t[reps / 2] / 1e9, reps);
      free(src); free(dst);
      (void)sink;
    }
  }
  return 0;
}
