/* mpi_coll_bench.c - per-iteration latency of an MPI collective, reported like
 * Gloo's benchmark tool (rank 0, back-to-back iterations, min / p50 / p99 / max
 * in microseconds).
 *
 * Build: mpicc -O2 -o mpi_coll_bench mpi_coll_bench.c
 * Usage: mpi_coll_bench [-c COLL] [-t seconds] [-i] [-l n1,n2,...]
 *   -c  allreduce (default), bcast, barrier, reduce, allgather, reduce_scatter,
 *       alltoall, gather, scatter.  n is the larger buffer's element count,
 *       as in nccl-tests and gloo-bench: allgather/gather output n, reduce_scatter/
 *       scatter input n, alltoall n in and out; each rank's block is ceil(n/size).
 *   -t  target measuring time per size in seconds (default 1.0)
 *   -i  allreduce in place (MPI_IN_PLACE); default out-of-place
 *   -l  comma-separated element counts (floats); default sweep:
 *       1 2 5 10 20 50 100 ... 1000000 2000000 5000000 16777216 67108864
 * Procedure per size (all ranks agree on every count via MPI_Bcast):
 *   1. 5 timed warm-up iterations; rank 0's median m is broadcast.
 *   2. extra warm-up: min(2000, 0.2 s / m) iterations (untimed).
 *   3. measured: N = clamp(t / m, 10, 1000000) back-to-back iterations, each
 *      timed with clock_gettime(CLOCK_MONOTONIC) on every rank.
 * Rank 0 prints its own min/p50/p99/max/mean plus the max over ranks of
 * each rank's p50 (p50max).  The first call's result is checked, every element
 * (rank r contributes r+1; the root's 1 for bcast and scatter).
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pct(const double *sorted, long n, double p) {
  long idx = (long)(p * (double)n);
  if (idx >= n) idx = n - 1;
  return sorted[idx];
}

enum { ALLREDUCE, BCAST, BARRIER, REDUCE, ALLGATHER, REDUCE_SCATTER, ALLTOALL, GATHER, SCATTER };
static const char *cnames[] = {"allreduce", "bcast", "barrier", "reduce", "allgather",
                               "reduce_scatter", "alltoall", "gather", "scatter"};
static int coll = ALLREDUCE, inplace = 0, rank, size;
static float *sbuf, *rbuf;

static void one(long n) {
  switch (coll) {
  case ALLREDUCE:
    if (inplace)
      MPI_Allreduce(MPI_IN_PLACE, rbuf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    else
      MPI_Allreduce(sbuf, rbuf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    break;
  case BCAST:
    MPI_Bcast(rbuf, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    break;
  case BARRIER:
    MPI_Barrier(MPI_COMM_WORLD);
    break;
  case REDUCE:
    MPI_Reduce(sbuf, rbuf, (int)n, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
    break;
  default: {
    int b = (int)((n + size - 1) / size); /* each rank's block */
    switch (coll) {
    case ALLGATHER:
      MPI_Allgather(sbuf, b, MPI_FLOAT, rbuf, b, MPI_FLOAT, MPI_COMM_WORLD);
      break;
    case REDUCE_SCATTER:
      MPI_Reduce_scatter_block(sbuf, rbuf, b, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      break;
    case ALLTOALL:
      MPI_Alltoall(sbuf, b, MPI_FLOAT, rbuf, b, MPI_FLOAT, MPI_COMM_WORLD);
      break;
    case GATHER:
      MPI_Gather(sbuf, b, MPI_FLOAT, rbuf, b, MPI_FLOAT, 0, MPI_COMM_WORLD);
      break;
    case SCATTER:
      MPI_Scatter(sbuf, b, MPI_FLOAT, rbuf, b, MPI_FLOAT, 0, MPI_COMM_WORLD);
      break;
    }
  }
  }
}

int main(int argc, char **argv) {
  double target = 1.0;
  long sizes[64];
  int nsizes = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  for (int a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "-c") && a + 1 < argc) {
      a++;
      const char *c = argv[a];
      coll = !strcmp(c, "bcast") ? BCAST : !strcmp(c, "barrier") ? BARRIER
           : !strcmp(c, "reduce") ? REDUCE : !strcmp(c, "allgather") ? ALLGATHER
           : !strcmp(c, "reduce_scatter") ? REDUCE_SCATTER : !strcmp(c, "alltoall") ? ALLTOALL
           : !strcmp(c, "gather") ? GATHER : !strcmp(c, "scatter") ? SCATTER
           : !strcmp(c, "allreduce") ? ALLREDUCE : -1;
      if (coll < 0) {
        if (rank == 0) fprintf(stderr, "mpi_coll_bench: unknown collective %s\n", c);
        MPI_Finalize();
        return 2;
      }
    } else if (!strcmp(argv[a], "-t") && a + 1 < argc) {
      target = atof(argv[++a]);
    } else if (!strcmp(argv[a], "-i")) {
      inplace = 1;
    } else if (!strcmp(argv[a], "-l") && a + 1 < argc) {
      char *s = argv[++a], *tok;
      while ((tok = strsep(&s, ",")) && nsizes < 64) sizes[nsizes++] = atol(tok);
    }
  }
  if (nsizes == 0) {
    for (long d = 1; d <= 1000000; d *= 10) {
      sizes[nsizes++] = d; sizes[nsizes++] = 2 * d; sizes[nsizes++] = 5 * d;
    }
    sizes[nsizes++] = 16777216;
    sizes[nsizes++] = 67108864;
  }
  long maxn = 1;
  for (int i = 0; i < nsizes; i++) if (sizes[i] > maxn) maxn = sizes[i];
  if (coll == BARRIER) { nsizes = 1; sizes[0] = 0; maxn = 1; }

  maxn += 16L * size; /* room for blocks rounded up to whole elements per rank */
  sbuf = aligned_alloc(64, ((maxn * sizeof(float) + 63) / 64) * 64);
  rbuf = aligned_alloc(64, ((maxn * sizeof(float) + 63) / 64) * 64);
  for (long j = 0; j < maxn; j++) { sbuf[j] = (float)(rank + 1); rbuf[j] = 0.f; }
  double *samples = malloc(sizeof(double) * 1000000);

  if (rank == 0) {
    static const char *names[] = {"MPI_Allreduce(MPI_FLOAT,MPI_SUM)", "MPI_Bcast(MPI_FLOAT,root=0)",
      "MPI_Barrier", "MPI_Reduce(MPI_FLOAT,MPI_SUM,root=0)", "MPI_Allgather(MPI_FLOAT)",
      "MPI_Reduce_scatter_block(MPI_FLOAT,MPI_SUM)", "MPI_Alltoall(MPI_FLOAT)",
      "MPI_Gather(MPI_FLOAT,root=0)", "MPI_Scatter(MPI_FLOAT,root=0)"};
    const char *cn = names[coll];
    printf("# %s ranks=%d inplace=%d target=%.2fs\n", cn, size, inplace, target);
    printf("%11s %11s %10s %10s %10s %10s %10s %10s %9s\n", "size(B)", "elements",
           "min(us)", "p50(us)", "p99(us)", "max(us)", "mean(us)", "p50max(us)", "iters");
  }

  for (int si = 0; si < nsizes; si++) {
    long n = sizes[si];
    if (coll == BCAST) for (long j = 0; j < n; j++) rbuf[j] = rank == 0 ? 1.f : 0.f;
    MPI_Barrier(MPI_COMM_WORLD);
    /* correctness check of the first call, every element: rank r contributes r+1 everywhere
     * (the root's 1 for bcast and scatter), so sums hold size*(size+1)/2 and block j of a
     * gathered buffer holds j+1 */
    if (coll != BCAST && !(coll == ALLREDUCE && inplace))
      for (long j = 0; j < maxn; j++) rbuf[j] = 0.f;
    if (coll == ALLREDUCE && inplace) for (long j = 0; j < n; j++) rbuf[j] = (float)(rank + 1);
    one(n);
    {
      long b = (n + size - 1) / size, len = 0;
      int blocks = 0;
      float want = (float)(size * (size + 1) / 2);
      switch (coll) {
      case ALLREDUCE: len = n; break;
      case BCAST: len = n; want = 1.f; break;
      case REDUCE: len = rank == 0 ? n : 0; break;
      case REDUCE_SCATTER: len = b; break;
      case ALLGATHER: case ALLTOALL: len = b * size; blocks = 1; break;
      case GATHER: len = rank == 0 ? b * size : 0; blocks = 1; break;
      case SCATTER: len = b; want = 1.f; break;
      default: break;
      }
      for (long j = 0; j < len; j++) {
        float w = blocks ? (float)(j / b + 1) : want;
        if (rbuf[j] != w) {
          fprintf(stderr, "rank %d: WRONG RESULT coll=%s n=%ld: element %ld is %g, want %g\n", rank,
                  cnames[coll], n, j, (double)rbuf[j], (double)w);
          MPI_Abort(MPI_COMM_WORLD, 2);
        }
      }
    }
    /* phase 1: 5 timed warm-ups */
    double w[5];
    for (int k = 0; k < 5; k++) { double t0 = now_us(); one(n); w[k] = now_us() - t0; }
    qsort(w, 5, sizeof(double), cmpd);
    double med = w[2];
    MPI_Bcast(&med, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (med < 0.01) med = 0.01;
    long extra = (long)(0.2e6 / med);
    if (extra > 2000) extra = 2000;
    long iters = (long)(target * 1e6 / med);
    if (iters < 10) iters = 10;
    if (iters > 1000000) iters = 1000000;
    for (long k = 0; k < extra; k++) one(n);
    MPI_Barrier(MPI_COMM_WORLD);
    for (long k = 0; k < iters; k++) {
      double t0 = now_us();
      one(n);
      samples[k] = now_us() - t0;
    }
    double sum = 0;
    for (long k = 0; k < iters; k++) sum += samples[k];
    qsort(samples, iters, sizeof(double), cmpd);
    double p50 = pct(samples, iters, 0.5), p50max = 0;
    MPI_Reduce(&p50, &p50max, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      printf("%11ld %11ld %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f %9ld\n",
             n * (long)sizeof(float), n, samples[0], p50, pct(samples, iters, 0.99),
             samples[iters - 1], sum / iters, p50max, iters);
      fflush(stdout);
    }
  }
  free(samples); free(sbuf); free(rbuf);
  MPI_Finalize();
  return 0;
}
