/* A program built against the installed nook: it serves one route on a free port, requests it
 * over a plain socket, and checks the answer. Exit status 0 means the installed headers,
 * libraries and build metadata work together. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nook.h>

static void hello(nook_req *req, void *user_data)
{
    (void)user_data;
    nook_respond(req, 200, "text/plain", "consumer ok", 11);
}

static int fetch(int port, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (write(fd, req, strlen(req)) < 0)
        return -1;
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(fd, out + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fd);
    return 0;
}

int main(void)
{
    printf("nook %s\n", nook_version());
    nook_server *srv = nook_server_new();
    nook_server_set_int(srv, NOOK_OPT_THREADS, 1);
    if (nook_server_listen(srv, "127.0.0.1:0", NULL) != NOOK_OK ||
        nook_route(srv, "GET /", hello, NULL, NULL) != NOOK_OK || nook_server_start(srv) != NOOK_OK) {
        fprintf(stderr, "consumer: cannot start the server\n");
        return 1;
    }
    char buf[4096];
    int ok = fetch(nook_server_port(srv, 0), buf, sizeof buf) == 0 &&
             strncmp(buf, "HTTP/1.1 200 ", 13) == 0 && strstr(buf, "\r\n\r\nconsumer ok");
    nook_server_stop(srv, 1000);
    nook_server_wait(srv);
    nook_server_free(srv);
    if (!ok) {
        fprintf(stderr, "consumer: unexpected response:\n%s\n", buf);
        return 1;
    }
    printf("consumer: ok\n");
    return 0;
}
