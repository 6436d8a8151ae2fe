#include "io/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "nook.h"

static int parse_port(const char *s, in_port_t *out)
{
    if (!*s)
        return NOOK_EADDR;
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return NOOK_EADDR;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535)
            return NOOK_EADDR;
    }
    *out = htons((in_port_t)v);
    return NOOK_OK;
}

static int parse_unix(const char *path, io_addr *out)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&out->ss;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un->sun_path)
        return NOOK_EADDR;
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n + 1);
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return NOOK_OK;
}

static int resolve_host(const char *host, in_port_t port, io_addr *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return NOOK_EADDR;
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    if (out->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&out->ss)->sin_port = port;
    else
        ((struct sockaddr_in6 *)&out->ss)->sin6_port = port;
    return NOOK_OK;
}

int io_addr_parse(const char *text, io_addr *out)
{
    memset(out, 0, sizeof *out);
    if (!text)
        return NOOK_EADDR;
    if (strncmp(text, "unix:", 5) == 0)
        return parse_unix(text + 5, out);

    char host[256];
    const char *colon;
    size_t hlen;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':')
            return NOOK_EADDR;
        hlen = (size_t)(end - text - 1);
        memcpy(host, text + 1, hlen < sizeof host ? hlen : 0);
        colon = end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon)
            return NOOK_EADDR;
        hlen = (size_t)(colon - text);
        memcpy(host, text, hlen < sizeof host ? hlen : 0);
    }
    if (hlen == 0 || hlen >= sizeof host)
        return NOOK_EADDR;
    host[hlen] = '\0';
    in_port_t port;
    if (parse_port(colon + 1, &port) != NOOK_OK)
        return NOOK_EADDR;

    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = port;
        out->len = sizeof *v4;
        return NOOK_OK;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = port;
        out->len = sizeof *v6;
        return NOOK_OK;
    }
    return resolve_host(host, port, out);
}

/* Removes a leftover socket file from an earlier run, but never a regular file. */
static void unlink_stale_socket(const io_addr *addr)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)&addr->ss;
    struct stat st;
    if (lstat(un->sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(un->sun_path);
}

int io_listen(const io_addr *addr, int backlog, bool reuseport)
{
    int family = addr->ss.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NOOK_ESYS;
    int one = 1;
    if (family == AF_UNIX) {
        unlink_stale_socket(addr);
    } else {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return e == EADDRINUSE ? NOOK_EADDRINUSE : NOOK_ESYS;
    }
    return fd;
}

int io_listen_claim(const io_addr *addr, int backlog)
{
    int family = addr->ss.ss_family;
    if (family != AF_UNIX && io_addr_port(addr) != 0) {
        /* SO_REUSEPORT lets any process of the same user bind the port too, so a stale server
         * would silently share it. A bind without SO_REUSEPORT fails while anyone listens on
         * the port: try that first, then let it go for the real (shareable) socket. */
        int probe = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return NOOK_ESYS;
        int one = 1;
        setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (family == AF_INET6)
            setsockopt(probe, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        int rc = bind(probe, (const struct sockaddr *)&addr->ss, addr->len);
        int e = errno;
        close(probe);
        if (rc != 0) {
            errno = e;
            return e == EADDRINUSE ? NOOK_EADDRINUSE : NOOK_ESYS;
        }
    }
    return io_listen(addr, backlog, true);
}

int io_sock_name(int fd, io_addr *out)
{
    memset(out, 0, sizeof *out);
    out->len = sizeof out->ss;
    return getsockname(fd, (struct sockaddr *)&out->ss, &out->len) == 0 ? NOOK_OK : NOOK_ESYS;
}

int io_addr_port(const io_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return 0;
}

size_t io_addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    int n;
    (void)len;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
        n = snprintf(buf, cap, "%s:%u", ip, ntohs(v4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
        n = snprintf(buf, cap, "[%s]:%u", ip, ntohs(v6->sin6_port));
    } else {
        n = snprintf(buf, cap, "unix");
    }
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}
