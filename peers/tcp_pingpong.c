/* tcp_pingpong.c - 1-byte TCP ping-pong round-trip latency on 127.0.0.1,
 * plus single-connection one-way throughput with large writes.
 * Build: gcc -O2 -o tcp_pingpong tcp_pingpong.c
 * Usage: tcp_pingpong PORT [seconds] [spin]   (PORT 0: any free port)
 * Forks: child = server (echoes 1 byte; then sinks a bulk stream), parent =
 * client.  TCP_NODELAY on both ends.  With "spin", both ends busy-poll with
 * recv(MSG_DONTWAIT) during the ping-pong instead of sleeping in read().  Ping-pong: 1000 warm-up round trips,
 * then round trips for `seconds` (default 3, max 1,000,000 samples); prints
 * min / p50 / p99 / mean RTT in us.  Then bulk: client writes 4 MiB chunks
 * for `seconds`, server reads into a 4 MiB buffer; throughput = bytes
 * received / elapsed (server side), GB/s = 1e9 B/s.  Only 127.0.0.1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}
static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static void die(const char *m) { perror(m); exit(1); }
static int spin = 0;
static void full_read(int fd, char *b, size_t n) {
  while (n) {
    ssize_t r = spin ? recv(fd, b, n, MSG_DONTWAIT) : read(fd, b, n);
    if (r < 0 && spin && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (r <= 0) die("read");
    b += r; n -= r;
  }
}
static void full_write(int fd, const char *b, size_t n) {
  while (n) { ssize_t r = write(fd, b, n); if (r <= 0) die("write"); b += r; n -= r; }
}

#define CHUNK (4 << 20)

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 15555;
  double secs = argc > 2 ? atof(argv[2]) : 3.0;
  spin = argc > 3 && !strcmp(argv[3], "spin");
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, (struct sockaddr *)&addr, sizeof addr)) die("bind");
  if (listen(ls, 1)) die("listen");
  socklen_t alen = sizeof addr; /* PORT 0: the kernel's choice, read back for the client */
  if (getsockname(ls, (struct sockaddr *)&addr, &alen)) die("getsockname");
  pid_t pid = fork();
  if (pid == 0) { /* server */
    alarm((unsigned)(4 * secs + 30));
    int c = accept(ls, NULL, NULL);
    if (c < 0) die("accept");
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char b;
    for (;;) { /* ping-pong until the client sends 'Q' */
      full_read(c, &b, 1);
      if (b == 'Q') break;
      full_write(c, &b, 1);
    }
    spin = 0;
    char *buf = malloc(CHUNK);
    memset(buf, 0, CHUNK);
    long total = 0;
    double t0 = 0;
    for (;;) {
      ssize_t r = read(c, buf, CHUNK);
      if (r <= 0) break;
      if (total == 0) t0 = now();
      total += r;
    }
    double dt = now() - t0;
    printf("bulk     bytes=%ld  time=%.3f s  throughput=%.2f GB/s (%.1f Gbit/s)\n",
           total, dt, total / dt / 1e9, total * 8 / dt / 1e9);
    fflush(stdout);
    _exit(0);
  }
  close(ls);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(s, (struct sockaddr *)&addr, sizeof addr)) die("connect");
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char b = 'x';
  for (int i = 0; i < 1000; i++) { full_write(s, &b, 1); full_read(s, &b, 1); }
  long max = 1000000, n = 0;
  double *rtt = malloc(sizeof(double) * max);
  double start = now();
  while (n < max && now() - start < secs) {
    double t0 = now();
    full_write(s, &b, 1);
    full_read(s, &b, 1);
    rtt[n++] = now() - t0;
  }
  double sum = 0;
  for (long i = 0; i < n; i++) sum += rtt[i];
  qsort(rtt, n, sizeof(double), cmpd);
  printf("pingpong%s 1-byte RTT: n=%ld min=%.1f us p50=%.1f us p99=%.1f us mean=%.1f us\n", spin ? "(spin)" : "", n,
         rtt[0] * 1e6, rtt[n / 2] * 1e6, rtt[(long)(n * 0.99)] * 1e6, sum / n * 1e6);
  fflush(stdout);
  b = 'Q';
  full_write(s, &b, 1);
  spin = 0;
  char *buf = malloc(CHUNK);
  memset(buf, 1, CHUNK);
  start = now();
  while (now() - start < secs) full_write(s, buf, CHUNK);
  close(s);
  int st;
  waitpid(pid, &st, 0);
  return 0;
}
