/* Socket helpers: address parsing, listening sockets, peer names. */
#ifndef NOOK_IO_SOCK_H
#define NOOK_IO_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct io_addr {
    struct sockaddr_storage ss;
    socklen_t len;
} io_addr;

/* Parses "IPv4:port", "[IPv6]:port", "localhost:port" or "unix:/path". NOOK_OK or NOOK_EADDR. */
int io_addr_parse(const char *text, io_addr *out);

/* Opens a non-blocking, close-on-exec listening socket bound to addr. With reuseport, several
 * sockets may share the port (one per worker). A Unix socket path is unlinked first if it is a
 * stale socket. Returns the fd, or NOOK_EADDRINUSE / NOOK_ESYS (errno kept). */
int io_listen(const io_addr *addr, int backlog, bool reuseport);

/* The first socket of a port the server's workers will share (io_listen with reuseport), but
 * NOOK_EADDRINUSE when another socket already listens on that port, even one that allows
 * sharing (a stale server of the same user). Port 0 and Unix sockets need no check. */
int io_listen_claim(const io_addr *addr, int backlog);

/* The bound address of a socket (to learn the port chosen for port 0). */
int io_sock_name(int fd, io_addr *out);

/* The port of a TCP address, 0 for others. */
int io_addr_port(const io_addr *a);

/* Formats a peer address ("1.2.3.4:5", "[::1]:5", "unix") into buf; returns its length. */
size_t io_addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap);

#endif
