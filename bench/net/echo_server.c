/*
 * echo_server: the physical-limit reference for the network benchmarks.
 *
 * A plain single-threaded, level-triggered epoll echo server: what a loop
 * would cost if the Python layer were free.  It reads up to 256 KiB per call
 * (the same read size the Python servers use) and writes it straight back; on
 * a partial write it keeps the rest, stops reading that connection and waits
 * for EPOLLOUT.
 *
 *   echo_server -m tcp  [-H 127.0.0.1] [-p 0]
 *   echo_server -m unix -u PATH
 *   echo_server -m udp  [-H 127.0.0.1] [-p 0]
 *
 * Prints "READY <port>" (or "READY <path>") on stdout once listening; runs
 * until killed (SIGTERM/SIGINT).
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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUFSZ (256 * 1024)

typedef struct {
    int fd;
    char *buf;
    size_t off, len;      /* pending output: buf[off:len] */
} conn_t;

static int epfd;
static conn_t listener;   /* its address marks the listening socket */

static void fail(const char *what) {
    fprintf(stderr, "echo_server: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void close_conn(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->buf);
    free(c);
}

static void set_events(conn_t *c, unsigned ev) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

/* Returns 0 when everything was written, 1 when output is pending, -1 on error. */
static int flush(conn_t *c) {
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            return -1;
        }
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 0;
}

static void on_stream(conn_t *c, unsigned events) {
    if (events & EPOLLOUT) {
        int r = flush(c);
        if (r < 0) { close_conn(c); return; }
        if (r == 0) set_events(c, EPOLLIN);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t n = recv(c->fd, c->buf, BUFSZ, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            close_conn(c);
            return;
        }
        if (n == 0) { close_conn(c); return; }
        c->off = 0;
        c->len = (size_t)n;
        int r = flush(c);
        if (r < 0) { close_conn(c); return; }
        if (r == 1) set_events(c, EPOLLOUT);   /* stop reading until flushed */
    }
}

static void on_accept(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            if (errno == ECONNABORTED) continue;
            perror("accept4");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* fails harmlessly on unix */
        conn_t *c = calloc(1, sizeof *c);
        if (!c || !(c->buf = malloc(BUFSZ))) { close(fd); free(c); continue; }
        c->fd = fd;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) { close(fd); free(c->buf); free(c); }
    }
}

static void serve_udp(int fd) {
    static char buf[65536];
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &listener};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) fail("epoll_ctl");
    for (;;) {
        struct epoll_event evs[1];
        if (epoll_wait(epfd, evs, 1, -1) < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait");
        }
        for (;;) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&ss, &sl);
            if (n < 0) break;   /* EAGAIN (or a transient error): back to epoll */
            sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&ss, sl);
        }
    }
}

int main(int argc, char **argv) {
    const char *mode = "tcp", *host = "127.0.0.1", *upath = NULL;
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "m:H:p:u:")) != -1) {
        switch (opt) {
        case 'm': mode = optarg; break;
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'u': upath = optarg; break;
        default:
            fprintf(stderr, "usage: echo_server -m tcp|unix|udp [-H host] [-p port] [-u path]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    int is_udp = !strcmp(mode, "udp"), is_unix = !strcmp(mode, "unix");
    int fd;
    char ready[300];
    if (is_unix) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        if (!upath || strlen(upath) >= sizeof sa.sun_path) { fprintf(stderr, "bad -u path\n"); return 2; }
        strcpy(sa.sun_path, upath);
        unlink(upath);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) fail("socket");
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) fail("bind");
        snprintf(ready, sizeof ready, "READY %s", upath);
    } else {
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_port = htons((unsigned short)port);
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
        fd = socket(AF_INET, (is_udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) fail("socket");
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) fail("bind");
        socklen_t sl = sizeof sa;
        getsockname(fd, (struct sockaddr *)&sa, &sl);
        snprintf(ready, sizeof ready, "READY %d", ntohs(sa.sin_port));
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) fail("epoll_create1");
    if (is_udp) {
        printf("%s\n", ready);
        fflush(stdout);
        serve_udp(fd);
        return 0;
    }
    if (listen(fd, 1024) < 0) fail("listen");
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &listener};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) fail("epoll_ctl");
    printf("%s\n", ready);
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(epfd, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait");
        }
        for (int k = 0; k < n; k++) {
            if (evs[k].data.ptr == &listener) on_accept(fd);
            else on_stream(evs[k].data.ptr, evs[k].events);
        }
    }
}
