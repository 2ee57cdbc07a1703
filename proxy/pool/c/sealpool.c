/* sealpool.c: see sealpool.h and docs/pool.md. */
#define _GNU_SOURCE
#include "sealpool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_REQUEST 4096
#define MAX_ANSWER (64 * 1024)

static void set(char *dst, size_t n, const char *src) {
	snprintf(dst, n, "%s", src);
}

/* append a JSON string, escaped; -1 if it does not fit or holds a control character */
static int put_string(char *buf, size_t n, size_t *len, const char *s) {
	if (*len + 1 >= n) return -1;
	buf[(*len)++] = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f) return -1;
		if (c == '"' || c == '\\') {
			if (*len + 1 >= n) return -1;
			buf[(*len)++] = '\\';
		}
		if (*len + 1 >= n) return -1;
		buf[(*len)++] = (char)c;
	}
	if (*len + 1 >= n) return -1;
	buf[(*len)++] = '"';
	buf[*len] = 0;
	return 0;
}

static int put_raw(char *buf, size_t n, size_t *len, const char *s) {
	size_t l = strlen(s);
	if (*len + l >= n) return -1;
	memcpy(buf + *len, s, l + 1);
	*len += l;
	return 0;
}

/* A small JSON scanner: enough for the answer's fixed shape. */
struct scan {
	const char *p, *end;
};

static void ws(struct scan *s) {
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\r' || *s->p == '\n')) s->p++;
}

static int hex4(const char *p, unsigned *v) {
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		*v <<= 4;
		if (c >= '0' && c <= '9') *v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f') *v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F') *v |= (unsigned)(c - 'A' + 10);
		else return -1;
	}
	return 0;
}

/* read a string into out (may be NULL), truncated; -1 on bad syntax */
static int str(struct scan *s, char *out, size_t n) {
	size_t len = 0;
	ws(s);
	if (s->p >= s->end || *s->p != '"') return -1;
	s->p++;
	while (s->p < s->end && *s->p != '"') {
		char c = *s->p++;
		if (c == '\\') {
			if (s->p >= s->end) return -1;
			char e = *s->p++;
			switch (e) {
			case '"': case '\\': case '/': c = e; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'n': c = '\n'; break;
			case 'r': c = '\r'; break;
			case 't': c = '\t'; break;
			case 'u': {
				unsigned v;
				if (s->end - s->p < 4 || hex4(s->p, &v) < 0) return -1;
				s->p += 4;
				c = v < 0x80 ? (char)v : '?'; /* identities worth comparing are ASCII */
				break;
			}
			default: return -1;
			}
		}
		if (out && len + 1 < n) out[len++] = c;
	}
	if (s->p >= s->end) return -1;
	s->p++;
	if (out && n) out[len] = 0;
	return 0;
}

static int skip(struct scan *s, int depth);

/* walk an object; for each key call want(key) to learn where its string goes */
struct field {
	const char *key;
	char *out;
	size_t n;
};

static int object(struct scan *s, struct field *fields, int *ok, struct sealpool_params *p, int top) {
	ws(s);
	if (s->p >= s->end || *s->p != '{') return -1;
	s->p++;
	ws(s);
	if (s->p < s->end && *s->p == '}') { s->p++; return 0; }
	for (;;) {
		char key[32];
		if (str(s, key, sizeof key) < 0) return -1;
		ws(s);
		if (s->p >= s->end || *s->p != ':') return -1;
		s->p++;
		ws(s);
		int done = 0;
		if (top && strcmp(key, "ok") == 0) {
			if (s->end - s->p >= 4 && memcmp(s->p, "true", 4) == 0) { *ok = 1; s->p += 4; done = 1; }
		} else if (top && strcmp(key, "peer") == 0 && s->p < s->end && *s->p == '{') {
			struct field pf[] = {{"cn", p->peer_cn, sizeof p->peer_cn}, {0, 0, 0}};
			const char *start = s->p;
			if (object(s, pf, ok, p, 0) < 0) return -1;
			p->peer_present = (s->p - start) > 2; /* not {} */
			done = 1;
		} else if (s->p < s->end && *s->p == '"') {
			for (struct field *f = fields; f->key; f++) {
				if (strcmp(key, f->key) == 0) {
					if (str(s, f->out, f->n) < 0) return -1;
					done = 1;
					break;
				}
			}
		}
		if (!done && skip(s, 0) < 0) return -1;
		ws(s);
		if (s->p < s->end && *s->p == ',') { s->p++; continue; }
		if (s->p < s->end && *s->p == '}') { s->p++; return 0; }
		return -1;
	}
}

static int skip(struct scan *s, int depth) {
	if (depth > 16) return -1;
	ws(s);
	if (s->p >= s->end) return -1;
	char c = *s->p;
	if (c == '"') return str(s, NULL, 0);
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		s->p++;
		ws(s);
		if (s->p < s->end && *s->p == close) { s->p++; return 0; }
		for (;;) {
			if (c == '{') {
				if (str(s, NULL, 0) < 0) return -1;
				ws(s);
				if (s->p >= s->end || *s->p != ':') return -1;
				s->p++;
			}
			if (skip(s, depth + 1) < 0) return -1;
			ws(s);
			if (s->p < s->end && *s->p == ',') { s->p++; continue; }
			if (s->p < s->end && *s->p == close) { s->p++; return 0; }
			return -1;
		}
	}
	/* number, true, false, null */
	while (s->p < s->end && strchr(",}] \t\r\n", *s->p) == NULL) s->p++;
	return 0;
}

static int fail(struct sealpool_params *p, const char *reason, const char *what) {
	set(p->reason, sizeof p->reason, reason);
	if (*reason == 0 && errno)
		snprintf(p->error, sizeof p->error, "%s: %s", what, strerror(errno));
	else
		set(p->error, sizeof p->error, what);
	return -1;
}

static int starttls(int fd, struct sealpool_params *p, int *plainfd) {
	char req[MAX_REQUEST + 1];
	size_t len = 0;
	*plainfd = -1;
	p->reason[0] = p->error[0] = p->version[0] = p->cipher[0] = p->alpn[0] = 0;
	p->server_name_out[0] = p->local_key[0] = p->peer_cn[0] = 0;
	p->peer_present = 0;
	errno = 0;
	if (!p->pool_path || !p->service) return fail(p, "", "pool_path and service are required");
	if (put_raw(req, sizeof req, &len, "{\"v\":1,\"service\":") < 0 ||
	    put_string(req, sizeof req, &len, p->service) < 0 ||
	    (p->server_name && *p->server_name &&
	     (put_raw(req, sizeof req, &len, ",\"server_name\":") < 0 ||
	      put_string(req, sizeof req, &len, p->server_name) < 0)) ||
	    put_raw(req, sizeof req, &len, "}\n") < 0)
		return fail(p, "", "service or server_name too long or not printable");

	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) return fail(p, "", "socket");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(p->pool_path) >= sizeof sa.sun_path) { close(s); errno = 0; return fail(p, "", "pool_path too long"); }
	strcpy(sa.sun_path, p->pool_path);
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) { int e = errno; close(s); errno = e; return fail(p, "", "connect to the pool"); }

	union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
	memset(&ctl, 0, sizeof ctl);
	struct iovec iov = {.iov_base = req, .iov_len = len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	ssize_t w;
	do w = sendmsg(s, &m, MSG_NOSIGNAL); while (w < 0 && errno == EINTR);
	int send_errno = w == (ssize_t)len ? 0 : (w < 0 ? errno : EIO);
	/* On a failed send, still read: a refusal may have come first. */

	char *ans = malloc(MAX_ANSWER);
	if (!ans) { close(s); return fail(p, "", "out of memory"); }
	size_t got = 0;
	int passed = -1;
	for (;;) {
		union { struct cmsghdr h; char buf[CMSG_SPACE(4 * sizeof(int))]; } in;
		struct iovec iv = {.iov_base = ans + got, .iov_len = MAX_ANSWER - 1 - got};
		struct msghdr r = {.msg_iov = &iv, .msg_iovlen = 1, .msg_control = in.buf, .msg_controllen = sizeof in.buf};
		ssize_t n;
		do n = recvmsg(s, &r, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
		if (n < 0) {
			int e = send_errno ? send_errno : errno;
			free(ans); close(s); if (passed >= 0) close(passed);
			errno = e;
			return fail(p, "", send_errno ? "sending the request" : "reading the answer");
		}
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&r); h; h = CMSG_NXTHDR(&r, h)) {
			if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
			size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int f;
				memcpy(&f, CMSG_DATA(h) + i * sizeof(int), sizeof f);
				if (passed < 0) passed = f;
				else close(f); /* more than one: keep the first only */
			}
		}
		got += (size_t)n;
		if (got > 0 && memchr(ans, '\n', got)) break;
		if (n == 0 || got >= MAX_ANSWER - 1) {
			free(ans); close(s); if (passed >= 0) close(passed); errno = send_errno;
			return fail(p, "", send_errno ? "sending the request" : "the pool closed without a complete answer");
		}
	}
	close(s);
	int ok = 0;
	struct field fields[] = {
		{"reason", p->reason, sizeof p->reason}, {"error", p->error, sizeof p->error},
		{"version", p->version, sizeof p->version}, {"cipher", p->cipher, sizeof p->cipher},
		{"alpn", p->alpn, sizeof p->alpn}, {"server_name", p->server_name_out, sizeof p->server_name_out},
		{"local_key", p->local_key, sizeof p->local_key}, {0, 0, 0},
	};
	struct scan sc = {ans, ans + got};
	int bad = object(&sc, fields, &ok, p, 1) < 0;
	free(ans);
	errno = 0;
	if (bad) { if (passed >= 0) close(passed); return fail(p, "", "malformed answer"); }
	if (!ok) {
		if (passed >= 0) close(passed);
		if (!p->reason[0]) set(p->reason, sizeof p->reason, "unknown");
		return -1;
	}
	if (send_errno) { if (passed >= 0) close(passed); errno = send_errno; return fail(p, "", "sending the request"); }
	if (passed < 0) return fail(p, "", "a success answer without a file descriptor");
	*plainfd = passed;
	return 0;
}

int starttls_client(int fd, struct sealpool_params *params, int *plainfd) {
	return starttls(fd, params, plainfd);
}

int starttls_server(int fd, struct sealpool_params *params, int *plainfd) {
	return starttls(fd, params, plainfd);
}
