/* Fetching a restore's objects ahead of it: see fetch.h. */
#include "fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/io.h"

/* One temporary file, holding object idx while it is fetched and
 * applied (chain index i lives in slot i % BK_FETCH_AHEAD). */
struct slot {
	int fd;
	size_t idx;              /* guarded by mu, as all below */
	bool started, done;
	int rc;
	uint64_t got;
	char err[1024];
};

struct bk_fetch {
	bk_store *store;
	const char *const *keys;
	size_t n;
	pthread_t thread;
	bool running;
	pthread_mutex_t mu;      /* guards below and the slots' state */
	pthread_cond_t cond;     /* a slot started, finished or was freed */
	struct slot slots[BK_FETCH_AHEAD];
	size_t next;             /* the next object to fetch */
	size_t released;         /* objects [0, released) are applied */
	bool stop;
};

static void *fetch_main(void *arg)
{
	bk_fetch *f = arg;

	pthread_mutex_lock(&f->mu);
	for (;;) {
		struct slot *s;
		char err[1024] = "";
		uint64_t got = 0;
		size_t idx;
		int rc;
		while (!f->stop && f->next < f->n &&
		       f->next - f->released >= BK_FETCH_AHEAD)
			pthread_cond_wait(&f->cond, &f->mu);
		if (f->stop || f->next >= f->n)
			break;
		idx = f->next++;
		s = &f->slots[idx % BK_FETCH_AHEAD];
		/* The slot is free (its object released): emptied before it
		 * is said to hold idx, so no reader sees the old bytes. */
		pthread_mutex_unlock(&f->mu);
		rc = lib_io_ftruncate(s->fd, 0);
		if (rc == 0 && lseek(s->fd, 0, SEEK_SET) < 0)
			rc = -errno;
		pthread_mutex_lock(&f->mu);
		s->idx = idx;
		s->started = true;
		s->done = false;
		pthread_mutex_unlock(&f->mu);
		if (rc < 0)
			snprintf(err, sizeof(err), "backup: a temporary file: "
				 "%s", strerror(-rc));
		else
			rc = bk_store_get(f->store, f->keys[idx], 0, 0, s->fd,
					  &got, err, sizeof(err));
		pthread_mutex_lock(&f->mu);
		s->rc = rc;
		s->got = got;
		memcpy(s->err, err, sizeof(err));
		s->done = true;
		pthread_cond_broadcast(&f->cond);
		if (rc < 0)
			break; /* the restore stops at this object */
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

int bk_fetch_start(bk_store *s, const char *const *keys, size_t n,
		   const char *dir, bk_fetch **out, char *err, size_t errlen)
{
	bk_fetch *f = calloc(1, sizeof(*f));
	int rc = 0;

	*out = NULL;
	if (!f)
		return -ENOMEM;
	f->store = s;
	f->keys = keys;
	f->n = n;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cond, NULL);
	for (int i = 0; i < BK_FETCH_AHEAD; i++)
		f->slots[i].fd = -1;
	for (int i = 0; rc == 0 && i < BK_FETCH_AHEAD; i++) {
		f->slots[i].fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC,
				      0600);
		if (f->slots[i].fd < 0) {
			rc = -errno;
			snprintf(err, errlen, "backup: cannot create a "
				 "temporary file in %s: %s", dir,
				 strerror(-rc));
		}
	}
	if (rc == 0) {
		rc = -pthread_create(&f->thread, NULL, fetch_main, f);
		if (rc < 0)
			snprintf(err, errlen, "backup: cannot start the fetch "
				 "thread: %s", strerror(-rc));
		f->running = rc == 0;
	}
	if (rc < 0) {
		bk_fetch_free(f);
		return rc;
	}
	*out = f;
	return 0;
}

/* The store's writes carry no signal: a partial object is looked at
 * again this often (a finished one wakes the waiter at once). */
#define FETCH_POLL_NS 1000000

int bk_fetch_wait(bk_fetch *f, size_t i, uint64_t need, int *fd,
		  uint64_t *have, bool *done, char *err, size_t errlen)
{
	struct slot *s = &f->slots[i % BK_FETCH_AHEAD];
	int rc = 0;

	*fd = s->fd;
	pthread_mutex_lock(&f->mu);
	for (;;) {
		struct stat st;
		struct timespec ts;
		bool started = s->started && s->idx == i;
		*done = started && s->done;
		if (*done && s->rc < 0) {
			snprintf(err, errlen, "%s", s->err);
			rc = s->rc;
			break;
		}
		if (*done) {
			*have = s->got;
			break;
		}
		if (started) {
			if (fstat(s->fd, &st) < 0) {
				rc = -errno;
				snprintf(err, errlen, "backup: a temporary "
					 "file: %s", strerror(-rc));
				break;
			}
			*have = (uint64_t)st.st_size;
			if (*have >= need)
				break;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += FETCH_POLL_NS;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&f->cond, &f->mu, &ts);
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

void bk_fetch_release(bk_fetch *f, size_t i)
{
	pthread_mutex_lock(&f->mu);
	if (i + 1 > f->released)
		f->released = i + 1;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
}

void bk_fetch_free(bk_fetch *f)
{
	if (!f)
		return;
	if (f->running) {
		pthread_mutex_lock(&f->mu);
		f->stop = true;
		pthread_cond_broadcast(&f->cond);
		pthread_mutex_unlock(&f->mu);
		pthread_join(f->thread, NULL);
	}
	for (int i = 0; i < BK_FETCH_AHEAD; i++)
		if (f->slots[i].fd >= 0)
			close(f->slots[i].fd);
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cond);
	free(f);
}
