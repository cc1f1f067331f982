/*
 * The proxy's kept connections (proxy_pool.h: rules K1, K2).
 */
#include "proxy_pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/clock.h"

struct px_pool_entry {
	int fd;                  /* -1: free */
	int64_t since_ns;        /* idle since */
	char url[512];
};

struct px_pool {
	int64_t idle_ns;
	pthread_mutex_t mu;      /* guards e */
	struct px_pool_entry e[PX_POOL_MAX];
};

int px_pool_new(int64_t idle_ms, px_pool **out)
{
	px_pool *pl = calloc(1, sizeof(*pl));

	*out = NULL;
	if (!pl)
		return -ENOMEM;
	pl->idle_ns = idle_ms * 1000000;
	pthread_mutex_init(&pl->mu, NULL);
	for (int i = 0; i < PX_POOL_MAX; i++)
		pl->e[i].fd = -1;
	*out = pl;
	return 0;
}

/* K2: nothing to read and no end seen. */
static bool quiet(int fd)
{
	struct pollfd pf = {.fd = fd, .events = POLLIN};

	return poll(&pf, 1, 0) == 0;
}

static void drop(struct px_pool_entry *e)
{
	close(e->fd);
	e->fd = -1;
}

/* K2: closes the entries idle too long; with pl->mu held. */
static void reap(px_pool *pl, int64_t now)
{
	for (int i = 0; i < PX_POOL_MAX; i++)
		if (pl->e[i].fd >= 0 && now - pl->e[i].since_ns >= pl->idle_ns)
			drop(&pl->e[i]);
}

int px_pool_take(px_pool *pl, const char *url)
{
	int fd = -1, best = -1;

	pthread_mutex_lock(&pl->mu);
	reap(pl, lib_clock_monotonic_ns());
	for (;;) {
		best = -1;
		/* The most recently idle one: the least likely to be
		 * closed by the other side. */
		for (int i = 0; i < PX_POOL_MAX; i++)
			if (pl->e[i].fd >= 0 && strcmp(pl->e[i].url, url) == 0 &&
			    (best < 0 ||
			     pl->e[i].since_ns > pl->e[best].since_ns))
				best = i;
		if (best < 0)
			break;
		if (quiet(pl->e[best].fd)) {
			fd = pl->e[best].fd;
			pl->e[best].fd = -1;
			break;
		}
		drop(&pl->e[best]);
	}
	pthread_mutex_unlock(&pl->mu);
	return fd;
}

void px_pool_give(px_pool *pl, const char *url, int fd)
{
	int64_t now = lib_clock_monotonic_ns();
	int slot = -1;

	if (strlen(url) >= sizeof(pl->e[0].url)) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&pl->mu);
	reap(pl, now);
	for (int i = 0; i < PX_POOL_MAX; i++) {
		if (pl->e[i].fd < 0) {
			slot = i;
			break;
		}
		if (slot < 0 || pl->e[i].since_ns < pl->e[slot].since_ns)
			slot = i;        /* K1: the oldest */
	}
	if (pl->e[slot].fd >= 0)
		drop(&pl->e[slot]);
	pl->e[slot].fd = fd;
	pl->e[slot].since_ns = now;
	snprintf(pl->e[slot].url, sizeof(pl->e[slot].url), "%s", url);
	pthread_mutex_unlock(&pl->mu);
}

void px_pool_clear(px_pool *pl)
{
	pthread_mutex_lock(&pl->mu);
	for (int i = 0; i < PX_POOL_MAX; i++)
		if (pl->e[i].fd >= 0)
			drop(&pl->e[i]);
	pthread_mutex_unlock(&pl->mu);
}

void px_pool_free(px_pool *pl)
{
	if (!pl)
		return;
	px_pool_clear(pl);
	pthread_mutex_destroy(&pl->mu);
	free(pl);
}
