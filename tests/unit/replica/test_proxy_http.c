/*
 * replica/proxy_http.c: HTTP/1.1 heads and bodies for the proxy, over
 * socket pairs. Heads parse with their headers (any case, trimmed,
 * comma lists), pipelined requests come one after the other; each rule
 * fails as it says (H1 a head too large, H2 malformed lines, EOF before
 * or inside a head, a timeout); framing follows H3/H4 (smuggling
 * refused); bodies are relayed byte for byte, by length (larger than the
 * buffer, from a writer thread), chunked with extensions and trailers
 * (H5, a bad size refused), and until the connection closes.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "replica/proxy_http.h"

struct pair {
	int a, b;
};

static struct pair pair_new(void)
{
	int fds[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	return (struct pair){fds[0], fds[1]};
}

static void pair_free(struct pair p)
{
	close(p.a);
	if (p.b >= 0)
		close(p.b);
}

static void put(int fd, const char *s)
{
	assert_int_equal(px_send(fd, s, strlen(s)), 0);
}

/* Reads what fd has until EOF into a malloc'd string. */
static char *slurp(int fd, size_t *len)
{
	size_t cap = 1024, n = 0;
	char *p = malloc(cap);
	ssize_t r;

	assert_non_null(p);
	while ((r = read(fd, p + n, cap - n - 1)) > 0) {
		n += (size_t)r;
		if (cap - n < 2) {
			cap *= 2;
			p = realloc(p, cap);
			assert_non_null(p);
		}
	}
	p[n] = '\0';
	*len = n;
	return p;
}

static void test_head(void **state)
{
	struct pair p = pair_new();
	px_conn *c = malloc(sizeof(*c));
	px_head *h = malloc(sizeof(*h));
	int kind;
	uint64_t len;

	(void)state;
	px_conn_init(c, p.a, 1000);
	put(p.b, "\r\nPOST /rows?x=1 HTTP/1.1\r\nHost: a\r\n"
	    "connection:  keep-alive, Upgrade \r\nContent-Length: 3\n\r\n"
	    "abcGET / HTTP/1.0\r\n\r\n");
	assert_int_equal(px_read_head(c, h), 0);
	assert_string_equal(h->a, "POST");
	assert_string_equal(h->b, "/rows?x=1");
	assert_string_equal(h->c, "HTTP/1.1");
	assert_int_equal(h->nh, 3);
	assert_string_equal(px_head_get(h, "HOST"), "a");
	assert_string_equal(px_head_get(h, "Connection"), "keep-alive, Upgrade");
	assert_true(px_head_has_token(h, "connection", "upgrade"));
	assert_false(px_head_has_token(h, "connection", "close"));
	assert_null(px_head_get(h, "Cookie"));
	assert_int_equal(px_request_framing(h, &kind, &len), 0);
	assert_int_equal(kind, PX_BODY_LENGTH);
	assert_int_equal(len, 3);
	/* The body, then the pipelined request. */
	assert_int_equal(px_conn_pending(c), 3 + 18);
	c->off += 3;
	assert_int_equal(px_read_head(c, h), 0);
	assert_string_equal(h->a, "GET");
	assert_string_equal(h->c, "HTTP/1.0");
	assert_int_equal(h->nh, 0);
	assert_int_equal(px_request_framing(h, &kind, &len), 0);
	assert_int_equal(kind, PX_BODY_NONE);
	/* A response: the reason may have spaces, or be missing. */
	put(p.b, "HTTP/1.1 404 Not Found Here\r\n\r\nHTTP/1.1 204\r\n\r\n");
	assert_int_equal(px_read_head(c, h), 0);
	assert_string_equal(h->b, "404");
	assert_string_equal(h->c, "Not Found Here");
	assert_int_equal(px_read_head(c, h), 0);
	assert_string_equal(h->b, "204");
	assert_string_equal(h->c, "");
	/* Then EOF before any byte. */
	close(p.b);
	p.b = -1;
	assert_int_equal(px_read_head(c, h), -ENODATA);
	pair_free(p);
	free(c);
	free(h);
}

/* One head that must fail with want. */
static void bad_head(const char *text, size_t repeat, const char *tail,
		     int want)
{
	struct pair p = pair_new();
	px_conn *c = malloc(sizeof(*c));
	px_head *h = malloc(sizeof(*h));

	static const char fill[] =
		"X-Filler: 0123456789012345678901234567890123456789\r\n";
	char *all = malloc(strlen(text) + repeat * (sizeof(fill) - 1) +
			   strlen(tail) + 1);

	assert_non_null(all);
	strcpy(all, text);
	for (size_t i = 0; i < repeat; i++)
		strcat(all, fill);
	strcat(all, tail);
	px_conn_init(c, p.a, 1000);
	put(p.b, all); /* one send: a socket pair's buffer counts each */
	free(all);
	shutdown(p.b, SHUT_WR);
	assert_int_equal(px_read_head(c, h), want);
	pair_free(p);
	free(c);
	free(h);
}

static void test_bad_heads(void **state)
{
	(void)state;
	bad_head("GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 0, "", -EPROTO);
	bad_head("GET / HTTP/1.1\r\nBad name: x\r\n\r\n", 0, "", -EPROTO);
	bad_head("GET / HTTP/1.1\r\n folded: x\r\n\r\n", 0, "", -EPROTO);
	bad_head("GET\r\n\r\n", 0, "", -EPROTO);
	bad_head("GET / HTTP/1.1\r\nHost: a\r\n", 0, "", -EPROTO); /* EOF */
	bad_head("GET / HTTP/1.1\r\n", 700, "", -E2BIG);     /* > 32 KiB */
	bad_head("GET / HTTP/1.1\r\n", 700, "\r\n", -E2BIG);
	bad_head("GET / HTTP/1.1\r\n", 200, "\r\n", -E2BIG); /* > 128 */
}

static void test_timeout(void **state)
{
	struct pair p = pair_new();
	px_conn *c = malloc(sizeof(*c));
	px_head *h = malloc(sizeof(*h));

	(void)state;
	px_conn_init(c, p.a, 50);
	put(p.b, "GET / HT");
	assert_int_equal(px_read_head(c, h), -ETIMEDOUT);
	pair_free(p);
	free(c);
	free(h);
}

/* The framing of a head given as text. */
static int framing(const char *text, bool response, bool head_req,
		   int *kind, uint64_t *len)
{
	struct pair p = pair_new();
	px_conn *c = malloc(sizeof(*c));
	px_head *h = malloc(sizeof(*h));
	int rc;

	px_conn_init(c, p.a, 1000);
	put(p.b, text);
	assert_int_equal(px_read_head(c, h), 0);
	*len = 0;
	rc = response ? px_response_framing(h, head_req, kind, len)
		      : px_request_framing(h, kind, len);
	pair_free(p);
	free(c);
	free(h);
	return rc;
}

static void test_framing(void **state)
{
	int k;
	uint64_t n;

	(void)state;
	assert_int_equal(framing("POST / HTTP/1.1\r\nTransfer-Encoding: "
				 "gzip, chunked\r\n\r\n", false, false, &k, &n),
			 0);
	assert_int_equal(k, PX_BODY_CHUNKED);
	assert_int_equal(framing("POST / HTTP/1.1\r\nTransfer-Encoding: "
				 "chunked\r\nContent-Length: 5\r\n\r\n", false,
				 false, &k, &n), -EPROTO);
	assert_int_equal(framing("POST / HTTP/1.1\r\nTransfer-Encoding: "
				 "gzip\r\n\r\n", false, false, &k, &n),
			 -EPROTO);
	assert_int_equal(framing("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
				 "Content-Length: 6\r\n\r\n", false, false, &k,
				 &n), -EPROTO);
	assert_int_equal(framing("POST / HTTP/1.1\r\nContent-Length: -5\r\n"
				 "\r\n", false, false, &k, &n), -EPROTO);
	assert_int_equal(framing("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
				 "Content-Length: 5\r\n\r\n", false, false, &k,
				 &n), 0);
	assert_int_equal(k, PX_BODY_LENGTH);
	assert_int_equal(n, 5);
	assert_int_equal(framing("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n"
				 "\r\n", true, true, &k, &n), 0);
	assert_int_equal(k, PX_BODY_NONE); /* HEAD */
	assert_int_equal(framing("HTTP/1.1 304 NM\r\nContent-Length: 9\r\n"
				 "\r\n", true, false, &k, &n), 0);
	assert_int_equal(k, PX_BODY_NONE);
	assert_int_equal(framing("HTTP/1.1 200 OK\r\n\r\n", true, false, &k,
				 &n), 0);
	assert_int_equal(k, PX_BODY_CLOSE);
	assert_int_equal(framing("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
				 "\r\n", true, false, &k, &n), 0);
	assert_int_equal(k, PX_BODY_NONE);
}

struct writer {
	int fd;
	size_t n;
};

static void *write_main(void *arg)
{
	struct writer *w = arg;
	char buf[7000];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)('a' + i % 26);
	for (size_t done = 0; done < w->n;) {
		size_t k = w->n - done < sizeof(buf) ? w->n - done
						     : sizeof(buf);
		if (px_send(w->fd, buf, k) < 0)
			break;
		done += k;
	}
	return NULL;
}

struct reader {
	int fd;
	char *got;
	size_t n;
};

static void *read_main(void *arg)
{
	struct reader *r = arg;

	r->got = slurp(r->fd, &r->n);
	return NULL;
}

static void test_relay_length(void **state)
{
	struct pair in = pair_new(), out = pair_new();
	px_conn *c = malloc(sizeof(*c));
	struct writer w = {in.b, 300000};
	struct reader r = {out.b, NULL, 0};
	pthread_t tw, tr;
	uint64_t count = 0;

	(void)state;
	px_conn_init(c, in.a, 5000);
	assert_int_equal(pthread_create(&tw, NULL, write_main, &w), 0);
	assert_int_equal(pthread_create(&tr, NULL, read_main, &r), 0);
	/* More than the buffer holds, in pieces; the rest stays. */
	assert_int_equal(px_relay_body(c, out.a, PX_BODY_LENGTH, 250000,
				       &count), 0);
	assert_int_equal(count, 250000);
	close(out.a);
	pthread_join(tr, NULL);
	assert_int_equal(r.n, 250000);
	assert_int_equal(r.got[26], 'a');
	assert_int_equal(r.got[249999], 'a' + 249999 % 7000 % 26);
	free(r.got);
	/* The next 50000 bytes are still there to read. */
	count = 0;
	{
		struct pair o2 = pair_new();
		struct reader r2 = {o2.b, NULL, 0};
		assert_int_equal(pthread_create(&tr, NULL, read_main, &r2), 0);
		assert_int_equal(px_relay_body(c, o2.a, PX_BODY_LENGTH, 50000,
					       &count), 0);
		close(o2.a);
		pthread_join(tr, NULL);
		assert_int_equal(r2.n, 50000);
		free(r2.got);
		close(o2.b);
	}
	pthread_join(tw, NULL);
	/* The source ends early: an error, not a short success. */
	close(in.b);
	{
		struct pair o3 = pair_new();
		assert_true(px_relay_body(c, o3.a, PX_BODY_LENGTH, 10, NULL) <
			    0);
		pair_free(o3);
	}
	close(in.a);
	close(out.b);
	free(c);
}

static void test_relay_chunked(void **state)
{
	static const char body[] =
		"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
		"0\r\nTrailer: yes\r\n\r\n";
	struct pair in = pair_new(), out = pair_new();
	px_conn *c = malloc(sizeof(*c));
	uint64_t count = 0;
	size_t n;
	char *got;

	(void)state;
	px_conn_init(c, in.a, 1000);
	put(in.b, body);
	put(in.b, "NEXT");
	assert_int_equal(px_relay_body(c, out.a, PX_BODY_CHUNKED, 0, &count),
			 0);
	assert_int_equal(count, 4 + 5 + 14);
	assert_int_equal(px_conn_pending(c), 4); /* "NEXT" stays */
	close(out.a);
	got = slurp(out.b, &n);
	assert_string_equal(got, body);
	free(got);
	/* A size that is not hex. */
	put(in.b, "zz\r\nab\r\n0\r\n\r\n");
	c->off = c->len = 0;
	{
		struct pair o2 = pair_new();
		assert_int_equal(px_relay_body(c, o2.a, PX_BODY_CHUNKED, 0,
					       NULL), -EPROTO);
		pair_free(o2);
	}
	/* Until close. */
	{
		struct pair o3 = pair_new();
		put(in.b, "rest of it");
		close(in.b);
		c->off = c->len = 0;
		count = 0;
		assert_int_equal(px_relay_body(c, o3.a, PX_BODY_CLOSE, 0,
					       &count), 0);
		assert_int_equal(count, 10);
		pair_free(o3);
	}
	close(in.a);
	close(out.b);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_head),
		cmocka_unit_test(test_bad_heads),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_framing),
		cmocka_unit_test(test_relay_length),
		cmocka_unit_test(test_relay_chunked),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
