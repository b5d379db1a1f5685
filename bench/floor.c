/* bench/floor.c — the least work any durable mail system must do per message, on this machine.
 *
 * One process does, per message, what Postern and Postfix both must do at the least, with
 * no daemons, no IPC, no parsing beyond finding the end of DATA and nothing logged:
 *   accept a loopback TCP connection; answer banner, EHLO, MAIL, RCPT, DATA, the data's
 *   final dot and QUIT (one reply per command, as smtp-source sends them one at a time);
 *   make the message durable before the 250 (create a queue file, write, fdatasync, fsync
 *   its directory); then deliver it (create a Maildir file in tmp/, write, fdatasync,
 *   rename into new/, fsync new/) and remove the queue file.
 * Its own client (a second process: connect, one command at a time, 4 KB of data) is the
 * load. Printed: messages/s, and the CPU (user + system, all threads) per message of the
 * "mail system" process and of the client, from getrusage. The mail system's CPU per
 * message is a floor for the daemons' CPU of any design that keeps both durable writes:
 * what is above it in a real system is its own (IPC, parsing, logging, bookkeeping).
 * Kernel work done outside the process (block-layer workers, interrupts landing on idle
 * CPUs) is not in getrusage, for this program as for the real systems' figures.
 *
 *   gcc -O2 -pthread -o floor bench/floor.c
 *   ./floor DIR MESSAGES SESSIONS SIZE      (DIR on the file system to measure)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static int lfd, qdir, tmpdir, newdir, total;
static atomic_int taken, done;

static void die(const char *what) { perror(what); exit(2); }

static void put(int fd, const char *s) {
  size_t n = strlen(s);
  if (write(fd, s, n) != (ssize_t)n) die("write");
}

/* Reads one line (up to CRLF) into buf; returns its length, 0 at EOF. */
static size_t line(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0) return 0;
    if (buf[n++] == '\n') break;
  }
  buf[n] = 0;
  return n;
}

static void durable_file(int dfd, const char *name, const char *data, size_t len) {
  int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) die("openat");
  if (write(fd, data, len) != (ssize_t)len) die("write file");
  if (fdatasync(fd)) die("fdatasync");
  close(fd);
}

static void *server(void *arg) {
  (void)arg;
  char *msg = malloc(1 << 20), buf[1024], name[64];
  for (;;) {
    int id = atomic_fetch_add(&taken, 1);
    if (id >= total) break;
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) die("accept");
    put(c, "220 floor ESMTP\r\n");
    line(c, buf, sizeof buf); put(c, "250 floor\r\n");           /* EHLO/HELO */
    line(c, buf, sizeof buf); put(c, "250 2.1.0 Ok\r\n");        /* MAIL */
    line(c, buf, sizeof buf); put(c, "250 2.1.5 Ok\r\n");        /* RCPT */
    line(c, buf, sizeof buf); put(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
    size_t len = 0;
    for (;;) { /* the data, in bulk, until CRLF.CRLF */
      ssize_t r = read(c, msg + len, (1 << 20) - len);
      if (r <= 0) die("read data");
      len += r;
      if (len >= 5 && memcmp(msg + len - 5, "\r\n.\r\n", 5) == 0) break;
    }
    snprintf(name, sizeof name, "q%d", id);
    durable_file(qdir, name, msg, len);
    if (fsync(qdir)) die("fsync queue dir");
    put(c, "250 2.0.0 Ok: queued\r\n");
    line(c, buf, sizeof buf); put(c, "221 2.0.0 Bye\r\n");       /* QUIT */
    close(c);
    /* delivery */
    char mname[64];
    snprintf(mname, sizeof mname, "m%d", id);
    durable_file(tmpdir, mname, msg, len);
    if (renameat(tmpdir, mname, newdir, mname)) die("rename");
    if (fsync(newdir)) die("fsync new");
    if (unlinkat(qdir, name, 0)) die("unlink");
    atomic_fetch_add(&done, 1);
  }
  free(msg);
  return NULL;
}

static char *cdata;
static int cport, csize, cn;
static atomic_int cnext;

static void *client_session(void *a) {
  (void)a;
  char buf[1024];
  while (atomic_fetch_add(&cnext, 1) < cn) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(cport)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa)) die("connect");
    line(s, buf, sizeof buf);
    put(s, "EHLO client\r\n"); line(s, buf, sizeof buf);
    put(s, "MAIL FROM:<bench@example.test>\r\n"); line(s, buf, sizeof buf);
    put(s, "RCPT TO:<bench@example.test>\r\n"); line(s, buf, sizeof buf);
    put(s, "DATA\r\n"); line(s, buf, sizeof buf);
    if (write(s, cdata, csize + 5) != csize + 5) die("write data");
    line(s, buf, sizeof buf);
    if (strncmp(buf, "250", 3)) { fprintf(stderr, "not accepted: %s", buf); exit(2); }
    put(s, "QUIT\r\n"); line(s, buf, sizeof buf);
    close(s);
  }
  return NULL;
}

/* The load: one thread per session in one process, as smtp-source is one process. */
static void client(int port, int n, int sessions, int size) {
  cdata = malloc(size + 8);
  memset(cdata, 'x', size);
  for (int i = 76; i + 1 < size; i += 78) { cdata[i] = '\r'; cdata[i + 1] = '\n'; }
  memcpy(cdata + size, "\r\n.\r\n", 5);
  cport = port; csize = size; cn = n;
  pthread_t t[256];
  for (int i = 0; i < sessions; i++) pthread_create(&t[i], NULL, client_session, NULL);
  for (int i = 0; i < sessions; i++) pthread_join(t[i], NULL);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(int who) {
  struct rusage ru;
  getrusage(who, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int subdir(const char *name) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  mkdir(p, 0700);
  int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) die(p);
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: floor DIR MESSAGES SESSIONS SIZE\n"); return 2; }
  dir = argv[1];
  total = atoi(argv[2]);
  int sessions = atoi(argv[3]), size = atoi(argv[4]);
  if (total <= 0 || sessions <= 0 || sessions > 256 || size <= 0 || size > 900000) { fprintf(stderr, "bad arguments\n"); return 2; }
  mkdir(dir, 0700);
  qdir = subdir("queue"); tmpdir = subdir("tmp"); newdir = subdir("new");
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 512) || getsockname(lfd, (struct sockaddr *)&sa, &sl)) die("listen");
  int port = ntohs(sa.sin_port);
  double c0 = cpu(RUSAGE_SELF), t0 = now();
  pid_t kid = fork();
  if (kid == 0) { client(port, total, sessions, size); _exit(0); }
  pthread_t t[256];
  for (int i = 0; i < sessions; i++) pthread_create(&t[i], NULL, server, NULL);
  for (int i = 0; i < sessions; i++) pthread_join(t[i], NULL);
  int st;
  waitpid(kid, &st, 0);
  double t1 = now(), c1 = cpu(RUSAGE_SELF), ck = cpu(RUSAGE_CHILDREN);
  if (!WIFEXITED(st) || WEXITSTATUS(st)) { fprintf(stderr, "client failed\n"); return 2; }
  printf("floor sessions=%d size=%d messages=%d: %.0f msg/s, mail system %.3f ms CPU/msg, client %.3f ms CPU/msg\n",
         sessions, size, atomic_load(&done), total / (t1 - t0), (c1 - c0) * 1000 / total, ck * 1000 / total);
  return 0;
}
