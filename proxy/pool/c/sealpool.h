/*
 * sealpool: a client of sealproxy's TLS pool (docs/pool.md), POSIX only,
 * no dependencies. Hand the pool a connected (client role) or accepted
 * (server role) TCP socket; get back a socket carrying the plaintext and
 * the identity the pool authenticated. The application never sees a
 * key, a PIN or a certificate.
 */
#ifndef SEALPOOL_H
#define SEALPOOL_H

#ifdef __cplusplus
extern "C" {
#endif

struct sealpool_params {
	/* In. */
	const char *pool_path;   /* the pool's unix socket */
	const char *service;     /* a [[pool.service]] name */
	const char *server_name; /* client role: the name to verify; NULL: the service's */

	/* Out: NUL-terminated, truncated to fit; empty when absent. */
	char reason[32];  /* on failure: not_allowed, busy, ... or "" for a local error */
	char error[256];  /* on failure: for humans */
	char version[16]; /* TLS1.3 */
	char cipher[64];
	char alpn[64];
	char server_name_out[256];
	char local_key[128]; /* the [[key]] the pool presented */
	char peer_cn[256];   /* the peer certificate's common name; "" without one */
	int peer_present;    /* 1 if the peer presented a (verified) certificate */
};

/*
 * starttls_client and starttls_server send fd to the pool and wait for
 * the answer. On success they return 0 and set *plainfd; the caller then
 * closes fd (the pool holds its own copy). On failure they return -1,
 * leave *plainfd at -1 and fd open, and fill reason and error.
 */
int starttls_client(int fd, struct sealpool_params *params, int *plainfd);
int starttls_server(int fd, struct sealpool_params *params, int *plainfd);

#ifdef __cplusplus
}
#endif

#endif
