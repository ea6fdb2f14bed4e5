/*
 * echo_client: a small epoll load generator for the network benchmarks.
 *
 * N connections (or N connected UDP sockets), each sending one message of S
 * bytes and waiting for the whole echo before sending the next (pipeline
 * depth 1).  Runs for -d seconds or -n messages, whichever comes first, then
 * prints one JSON object on stdout: messages, elapsed seconds, messages/s and
 * latency percentiles (microseconds).
 *
 *   echo_client -m tcp  -H 127.0.0.1 -p PORT [-c N] [-s BYTES] [-d SEC] [-n MSGS]
 *   echo_client -m unix -u PATH ...
 *   echo_client -m udp  -H 127.0.0.1 -p PORT ...   (lost datagrams are resent after -t ms)
 *   echo_client -m tls  -H 127.0.0.1 -p PORT ...   (only when built with -DWITH_TLS)
 *   echo_client -I      prints {"tls": true|false}: was it built with TLS?
 *
 * Partial reads and writes are handled (100 KiB messages take many of both);
 * every echo is compared with what was sent (-V 0 turns that off).
 * Exit status: 0 ok, 1 runtime error (JSON with "error"), 2 usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

enum { M_TCP, M_UNIX, M_UDP, M_TLS };

typedef struct {
    int fd;
    int idx;
    size_t sent, rcvd;
    uint64_t t_start;     /* ns, when the current message started */
    int out_armed;        /* EPOLLOUT registered */
#ifdef WITH_TLS
    SSL *ssl;
#endif
} conn_t;

/* Latency histogram: 1 us buckets up to HIST_MAX us, then one overflow bucket. */
#define HIST_MAX 2000000
static uint32_t *hist;
static uint64_t lat_max_ns, lat_sum_ns;

static int mode = M_TCP;
static const char *host = "127.0.0.1";
static int port = 0;
static const char *upath = NULL;
static int nconns = 10;
static size_t size = 1024;
static double duration = 2.0;
static uint64_t max_msgs = 0;       /* 0 = unlimited */
static int verify = 1;
static int udp_timeout_ms = 200;

static int epfd;
static char *sbuf;                  /* the message (same for everyone) */
static char **rbufs;                /* one receive buffer per connection */
static uint64_t messages, lost, resent;
static uint64_t t0_ns;

#ifdef WITH_TLS
static SSL_CTX *ssl_ctx;
#endif

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Keep it valid JSON: no quotes or backslashes in the message. */
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\\' || *p == '\n') *p = '\'';
    double el = t0_ns ? (now_ns() - t0_ns) / 1e9 : 0.0;
    printf("{\"error\": \"%s\", \"messages\": %llu, \"seconds\": %.6f}\n", msg,
           (unsigned long long)messages, el);
    fflush(stdout);
    exit(1);
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl: %s", strerror(errno));
}

static void ep_set(conn_t *c, int want_out) {
    struct epoll_event ev;
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->out_armed = want_out;
}

static int open_socket(void) {
    int fd;
    if (mode == M_UNIX) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        if (strlen(upath) >= sizeof sa.sun_path) die("unix path too long");
        strcpy(sa.sun_path, upath);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0) die("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect %s: %s", upath, strerror(errno));
        return fd;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("bad IPv4 address %s", host);
    fd = socket(AF_INET, mode == M_UDP ? SOCK_DGRAM : SOCK_STREAM, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect %s:%d: %s", host, port, strerror(errno));
    if (mode != M_UDP) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static void start_message(conn_t *c, uint64_t now);

static void try_write(conn_t *c) {
    while (c->sent < size) {
        ssize_t n;
#ifdef WITH_TLS
        if (mode == M_TLS) {
            int r = SSL_write(c->ssl, sbuf + c->sent, (int)(size - c->sent));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE) { if (!c->out_armed) ep_set(c, 1); return; }
                if (e == SSL_ERROR_WANT_READ) return;     /* retried on the next readable */
                die("SSL_write failed (error %d) on connection %d", e, c->idx);
            }
            c->sent += (size_t)r;
            continue;
        }
#endif
        n = send(c->fd, sbuf + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) { if (!c->out_armed) ep_set(c, 1); return; }
            if (errno == EINTR) continue;
            if (mode == M_UDP && errno == ECONNREFUSED) die("udp send: connection refused (server gone?)");
            die("send on connection %d: %s", c->idx, strerror(errno));
        }
        if (mode == M_UDP && (size_t)n != size) die("short datagram send");
        c->sent += (size_t)n;
    }
    if (c->out_armed) ep_set(c, 0);
}

static void message_done(conn_t *c, uint64_t now) {
    char *rb = rbufs[c->idx];
    if (verify && memcmp(rb, sbuf, size) != 0) die("echo mismatch on connection %d", c->idx);
    uint64_t lat = now - c->t_start;
    uint64_t us = lat / 1000;
    hist[us < HIST_MAX ? us : HIST_MAX]++;
    if (lat > lat_max_ns) lat_max_ns = lat;
    lat_sum_ns += lat;
    messages++;
}

/* Returns 1 when the current message completed. */
static int try_read(conn_t *c) {
    char *rb = rbufs[c->idx];
    if (mode == M_UDP) {
        ssize_t n = recv(c->fd, rb, size + 1, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
            die("udp recv on socket %d: %s", c->idx, strerror(errno));
        }
        if ((size_t)n != size) die("udp echo of %zd bytes, expected %zu", n, size);
        if (c->sent < size) return 0;   /* a late echo of a message already counted lost */
        c->rcvd = size;
        return 1;
    }
    while (c->rcvd < size) {
        ssize_t n;
#ifdef WITH_TLS
        if (mode == M_TLS) {
            int r = SSL_read(c->ssl, rb + c->rcvd, (int)(size - c->rcvd));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ) return 0;
                if (e == SSL_ERROR_WANT_WRITE) { if (!c->out_armed) ep_set(c, 1); return 0; }
                if (e == SSL_ERROR_ZERO_RETURN) die("server closed TLS connection %d", c->idx);
                die("SSL_read failed (error %d) on connection %d", e, c->idx);
            }
            c->rcvd += (size_t)r;
            continue;
        }
#endif
        n = recv(c->fd, rb + c->rcvd, size - c->rcvd, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            if (errno == EINTR) continue;
            die("recv on connection %d: %s", c->idx, strerror(errno));
        }
        if (n == 0) die("server closed connection %d", c->idx);
        c->rcvd += (size_t)n;
    }
    return c->sent == size;
}

static void start_message(conn_t *c, uint64_t now) {
    c->sent = c->rcvd = 0;
    c->t_start = now;
    try_write(c);
}

static double percentile(double p) {
    if (!messages) return 0.0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)messages);
    if (want >= messages) want = messages - 1;
    uint64_t acc = 0;
    for (uint32_t i = 0; i <= HIST_MAX; i++) {
        acc += hist[i];
        if (acc > want) return i + 0.5;  /* bucket midpoint, us */
    }
    return HIST_MAX;
}

static void usage(void) {
    fprintf(stderr,
            "usage: echo_client -m tcp|unix|udp|tls [-H host] [-p port] [-u path]\n"
            "                   [-c conns] [-s bytes] [-d seconds] [-n messages]\n"
            "                   [-V 0|1] [-t udp_timeout_ms]   |   echo_client -I\n");
    exit(2);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "m:H:p:u:c:s:d:n:V:t:I")) != -1) {
        switch (opt) {
        case 'I':           /* build information, for the runner */
#ifdef WITH_TLS
            printf("{\"tls\": true}\n");
#else
            printf("{\"tls\": false}\n");
#endif
            return 0;
        case 'm':
            if (!strcmp(optarg, "tcp")) mode = M_TCP;
            else if (!strcmp(optarg, "unix")) mode = M_UNIX;
            else if (!strcmp(optarg, "udp")) mode = M_UDP;
            else if (!strcmp(optarg, "tls")) mode = M_TLS;
            else usage();
            break;
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'u': upath = optarg; break;
        case 'c': nconns = atoi(optarg); break;
        case 's': size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'd': duration = atof(optarg); break;
        case 'n': max_msgs = strtoull(optarg, NULL, 10); break;
        case 'V': verify = atoi(optarg); break;
        case 't': udp_timeout_ms = atoi(optarg); break;
        default: usage();
        }
    }
    if (nconns < 1 || size < 1 || duration <= 0) usage();
    if (mode == M_UNIX && !upath) usage();
    if (mode != M_UNIX && port <= 0) usage();
    if (mode == M_UDP && size > 65507) die("UDP message too large");
#ifndef WITH_TLS
    if (mode == M_TLS) die("built without TLS support (needs libssl-dev)");
#else
    if (mode == M_TLS) {
        ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!ssl_ctx) die("SSL_CTX_new failed");
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);   /* self-signed, loopback */
        SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
#endif
    signal(SIGPIPE, SIG_IGN);

    hist = calloc(HIST_MAX + 1, sizeof *hist);
    sbuf = malloc(size);
    rbufs = calloc((size_t)nconns, sizeof *rbufs);
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    if (!hist || !sbuf || !rbufs || !conns) die("out of memory");
    for (size_t i = 0; i < size; i++) sbuf[i] = (char)('a' + (i * 7 + i / 251) % 26);

    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1: %s", strerror(errno));
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->idx = i;
        c->fd = open_socket();
        rbufs[i] = malloc(size + 1);
        if (!rbufs[i]) die("out of memory");
#ifdef WITH_TLS
        if (mode == M_TLS) {         /* blocking handshake, then non-blocking I/O */
            c->ssl = SSL_new(ssl_ctx);
            SSL_set_fd(c->ssl, c->fd);
            if (SSL_connect(c->ssl) != 1) die("TLS handshake failed on connection %d", i);
        }
#endif
        set_nonblock(c->fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    }

    t0_ns = now_ns();
    uint64_t deadline = t0_ns + (uint64_t)(duration * 1e9);
    uint64_t udp_to = (uint64_t)udp_timeout_ms * 1000000ull;
    uint64_t last_check = t0_ns;
    for (int i = 0; i < nconns; i++) start_message(&conns[i], t0_ns);

    struct epoll_event evs[256];
    int done = 0;
    while (!done) {
        int n = epoll_wait(epfd, evs, 256, mode == M_UDP ? 20 : 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait: %s", strerror(errno));
        }
        uint64_t now = now_ns();
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            if (evs[k].events & (EPOLLERR | EPOLLHUP) && !(evs[k].events & EPOLLIN))
                die("connection %d failed (server closed or refused)", c->idx);
            if (evs[k].events & EPOLLOUT) try_write(c);
            if (evs[k].events & EPOLLIN) {
                if (try_read(c)) {
                    message_done(c, now);
                    if (max_msgs && messages >= max_msgs) { done = 1; break; }
                    start_message(c, now);
                }
#ifdef WITH_TLS
                else if (mode == M_TLS && c->sent < size) try_write(c);  /* WANT_READ on write */
#endif
            }
        }
        if (now >= deadline) done = 1;
        if (mode == M_UDP && now - last_check > udp_to / 4) {
            last_check = now;
            for (int i = 0; i < nconns; i++) {
                conn_t *c = &conns[i];
                if (now - c->t_start > udp_to) {    /* datagram or its echo lost: resend */
                    lost++;
                    resent++;
                    start_message(c, now);
                }
            }
        }
    }
    uint64_t t1 = now_ns();
    double el = (t1 - t0_ns) / 1e9;
    printf("{\"mode\": \"%s\", \"connections\": %d, \"size\": %zu, \"messages\": %llu, "
           "\"seconds\": %.6f, \"msgs_per_s\": %.1f, \"lost\": %llu, "
           "\"latency_us\": {\"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, "
           "\"p999\": %.1f, \"max\": %.1f}}\n",
           mode == M_TCP ? "tcp" : mode == M_UNIX ? "unix" : mode == M_UDP ? "udp" : "tls",
           nconns, size, (unsigned long long)messages, el, messages / el,
           (unsigned long long)lost,
           messages ? lat_sum_ns / 1e3 / (double)messages : 0.0,
           percentile(50), percentile(90), percentile(99), percentile(99.9), lat_max_ns / 1e3);
    fflush(stdout);
    for (int i = 0; i < nconns; i++) {
#ifdef WITH_TLS
        if (conns[i].ssl) SSL_free(conns[i].ssl);
#endif
        close(conns[i].fd);
    }
    return 0;
}
