/*
 * replica/proxy_pool.c: the proxy's kept connections, over socket
 * pairs. A connection given back is taken for its URL only, the most
 * recently idle first; one the other side closed, or that has bytes
 * nobody asked for, is closed instead of taken (K2); one idle longer
 * than the limit is closed (K2); a full pool closes its oldest (K1);
 * clear and free close everything.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "replica/proxy_pool.h"

#define URL_A "http://10.0.0.1:8090"
#define URL_B "http://10.0.0.2:8090"

/* A socket pair: the pool gets fds[0], the test keeps fds[1]. */
static void pair(int fds[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
}

static bool is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* Whether the peer of fd was closed: EOF, or a reset (it was closed
 * with bytes unread). */
static bool peer_closed(int fd)
{
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	ssize_t r;
	char c;

	if (poll(&pf, 1, 1000) != 1)
		return false;
	r = read(fd, &c, 1);
	return r == 0 || (r < 0 && errno == ECONNRESET);
}

static void test_take_by_url(void **state)
{
	px_pool *pl;
	int a[2], b[2], a2[2];

	(void)state;
	assert_int_equal(px_pool_new(60000, &pl), 0);
	assert_int_equal(px_pool_take(pl, URL_A), -1);
	pair(a);
	pair(b);
	pair(a2);
	px_pool_give(pl, URL_A, a[0]);
	px_pool_give(pl, URL_B, b[0]);
	px_pool_give(pl, URL_A, a2[0]);
	/* The most recently idle one of URL_A first, then the other. */
	assert_int_equal(px_pool_take(pl, URL_A), a2[0]);
	assert_int_equal(px_pool_take(pl, URL_A), a[0]);
	assert_int_equal(px_pool_take(pl, URL_A), -1);
	assert_int_equal(px_pool_take(pl, URL_B), b[0]);
	assert_int_equal(px_pool_take(pl, URL_B), -1);
	for (int i = 0; i < 2; i++) {
		close(a[i]);
		close(b[i]);
		close(a2[i]);
	}
	px_pool_free(pl);
	px_pool_free(NULL);
}

static void test_closed_or_readable_dropped(void **state)
{
	px_pool *pl;
	int x[2], y[2], z[2];

	(void)state;
	assert_int_equal(px_pool_new(60000, &pl), 0);
	pair(x);
	pair(y);
	pair(z);
	px_pool_give(pl, URL_A, x[0]);
	px_pool_give(pl, URL_A, y[0]);
	px_pool_give(pl, URL_A, z[0]);
	close(z[1]);                        /* the other side closed it */
	assert_int_equal(write(y[1], "HTTP", 4), 4); /* unasked bytes */
	/* z and y are closed, not taken; x is. */
	assert_int_equal(px_pool_take(pl, URL_A), x[0]);
	assert_true(peer_closed(y[1]));
	assert_int_equal(px_pool_take(pl, URL_A), -1);
	close(x[0]);
	close(x[1]);
	close(y[1]);
	px_pool_free(pl);
}

static void test_idle_limit(void **state)
{
	px_pool *pl;
	int x[2];

	(void)state;
	assert_int_equal(px_pool_new(20, &pl), 0);
	pair(x);
	px_pool_give(pl, URL_A, x[0]);
	poll(NULL, 0, 60);
	assert_int_equal(px_pool_take(pl, URL_A), -1);
	assert_true(peer_closed(x[1]));
	close(x[1]);
	px_pool_free(pl);
}

static void test_full_and_clear(void **state)
{
	px_pool *pl;
	int fds[PX_POOL_MAX + 1][2];

	(void)state;
	assert_int_equal(px_pool_new(60000, &pl), 0);
	for (int i = 0; i <= PX_POOL_MAX; i++) {
		pair(fds[i]);
		px_pool_give(pl, URL_A, fds[i][0]);
		poll(NULL, 0, 1);           /* distinct idle times */
	}
	/* K1: the oldest went when the pool was full. */
	assert_true(peer_closed(fds[0][1]));
	for (int i = 1; i <= PX_POOL_MAX; i++)
		assert_true(is_open(fds[i][0]));
	px_pool_clear(pl);
	for (int i = 1; i <= PX_POOL_MAX; i++)
		assert_true(peer_closed(fds[i][1]));
	assert_int_equal(px_pool_take(pl, URL_A), -1);
	for (int i = 0; i <= PX_POOL_MAX; i++)
		close(fds[i][1]);
	px_pool_free(pl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_take_by_url),
		cmocka_unit_test(test_closed_or_readable_dropped),
		cmocka_unit_test(test_idle_limit),
		cmocka_unit_test(test_full_and_clear),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
