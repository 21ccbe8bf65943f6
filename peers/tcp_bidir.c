/* tcp_bidir.c - full-duplex TCP throughput on one loopback connection, the
 * traffic pattern of a 2-rank allreduce (both peers send and receive at once).
 * Build: gcc -O2 -pthread -o tcp_bidir tcp_bidir.c
 * Usage: tcp_bidir PORT [seconds] [chunk_KiB]   (PORT 0: any free port)
 * Forks into two processes joined by one TCP connection on 127.0.0.1.  In
 * each process a thread writes chunks (default 4096 KiB, always from the same
 * buffer, so small chunks stay cache resident) for `seconds`, then
 * shutdown(SHUT_WR); the main thread reads until EOF.  Each process prints
 * the bytes it received / time between first byte and EOF (GB/s = 1e9 B/s).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static size_t CHUNK = 4 << 20;
static double secs = 3.0;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}
static void die(const char *m) { perror(m); exit(1); }

static void *writer(void *arg) {
  int fd = *(int *)arg;
  char *buf = malloc(CHUNK);
  memset(buf, 1, CHUNK);
  double start = now();
  while (now() - start < secs) {
    size_t n = CHUNK;
    char *p = buf;
    while (n) { ssize_t r = write(fd, p, n); if (r <= 0) die("write"); p += r; n -= r; }
  }
  shutdown(fd, SHUT_WR);
  free(buf);
  return NULL;
}

static void run(int fd, const char *who) {
  pthread_t th;
  pthread_create(&th, NULL, writer, &fd);
  char *buf = malloc(CHUNK);
  memset(buf, 0, CHUNK);
  long total = 0;
  double t0 = 0;
  for (;;) {
    ssize_t r = read(fd, buf, CHUNK);
    if (r < 0) die("read");
    if (r == 0) break;
    if (total == 0) t0 = now();
    total += r;
  }
  double dt = now() - t0;
  pthread_join(th, NULL);
  printf("%s received %ld bytes in %.3f s = %.2f GB/s\n", who, total, dt, total / dt / 1e9);
  fflush(stdout);
  free(buf);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 15556;
  if (argc > 2) secs = atof(argv[2]);
  if (argc > 3) CHUNK = (size_t)atol(argv[3]) << 10;
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
  if (pid == 0) {
    alarm((unsigned)(2 * secs + 30));
    int c = accept(ls, NULL, NULL);
    if (c < 0) die("accept");
    run(c, "server");
    _exit(0);
  }
  close(ls);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(s, (struct sockaddr *)&addr, sizeof addr)) die("connect");
  run(s, "client");
  int st;
  waitpid(pid, &st, 0);
  return 0;
}
