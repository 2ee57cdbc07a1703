/* A test application of the C pool client (proxy/pool/c): server mode
 * accepts one TCP connection and answers one line through the pool;
 * client mode connects, fetches "/" through the pool, prints the page. */
#define _GNU_SOURCE
#include "sealpool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void answer(const char *role, struct sealpool_params *p) {
	printf("%s ok version=%s peer_present=%d peer_cn=%s local_key=%s server_name=%s\n", role, p->version,
	       p->peer_present, p->peer_cn, p->local_key, p->server_name_out);
	fflush(stdout);
}

int main(int argc, char **argv) {
	if (argc < 4) return 2;
	struct sealpool_params p = {.pool_path = argv[2], .service = argv[3]};
	int plain = -1;
	if (strcmp(argv[1], "server") == 0) {
		int ln = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t al = sizeof a;
		if (ln < 0 || bind(ln, (struct sockaddr *)&a, sizeof a) < 0 || listen(ln, 1) < 0 ||
		    getsockname(ln, (struct sockaddr *)&a, &al) < 0) { perror("listen"); return 1; }
		printf("port %d\n", ntohs(a.sin_port));
		fflush(stdout);
		int fd = accept(ln, NULL, NULL);
		if (fd < 0) { perror("accept"); return 1; }
		if (starttls_server(fd, &p, &plain) < 0) {
			printf("refused %s %s\n", p.reason, p.error);
			return 3;
		}
		close(fd);
		answer("server", &p);
		char line[1024];
		size_t n = 0;
		while (n < sizeof line - 1) {
			ssize_t r = read(plain, line + n, 1);
			if (r <= 0) break;
			if (line[n++] == '\n') break;
		}
		char out[1100];
		int l = snprintf(out, sizeof out, "pong: %.*s", (int)n, line);
		if (write(plain, out, (size_t)l) != l) return 1;
		shutdown(plain, SHUT_WR);
		char b[64];
		while (read(plain, b, sizeof b) > 0) {}
		close(plain);
		return 0;
	}
	if (argc < 6) return 2;
	p.server_name = argv[5];
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons((unsigned short)atoi(argv[4]))};
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); return 1; }
	if (starttls_client(fd, &p, &plain) < 0) {
		printf("refused %s %s\n", p.reason, p.error);
		return 3;
	}
	close(fd);
	answer("client", &p);
	const char *get = "GET / HTTP/1.0\r\n\r\n";
	if (write(plain, get, strlen(get)) < 0) return 1;
	char b[4096];
	ssize_t r;
	while ((r = read(plain, b, sizeof b)) > 0) fwrite(b, 1, (size_t)r, stdout);
	close(plain);
	return 0;
}
