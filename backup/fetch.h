/*
 * Fetching a restore's objects ahead of it (backup/restore.c): one thread
 * fetches the chain's objects in order, each into a temporary file, at
 * most BK_FETCH_AHEAD objects ahead of the one being applied; the
 * restore reads an object while it is still arriving (a wait returns as
 * soon as the bytes it needs are there). So the download of an object
 * overlaps the apply of the one before it and its own.
 *
 *   bk_fetch_start(store, keys, n, dir, &f, err);
 *   for i in 0..n: bk_fetch_wait(f, i, need, &fd, &have, &done, err)...;
 *                  bk_fetch_release(f, i);
 *   bk_fetch_free(f);      // also to stop early: waits for a GET under way
 *
 * Threads: the store is used by the fetch thread only between start and
 * free (a store is used by one thread at a time, store.h).
 */
#ifndef BACKUP_FETCH_H
#define BACKUP_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Objects fetched ahead, counting the one being applied. */
#define BK_FETCH_AHEAD 4

typedef struct bk_fetch bk_fetch;

/* Starts the thread for objects keys[0..n) (the strings must outlive
 * f), with its temporary files (O_TMPFILE) in directory dir. */
int bk_fetch_start(bk_store *s, const char *const *keys, size_t n,
		   const char *dir, bk_fetch **out, char *err,
		   size_t errlen);

/* Waits until object i (not yet released, every object before it
 * released) has its first need bytes, or is whole: *fd its file (owned
 * by f), *have its bytes there, *done whether it is whole. A failed
 * fetch returns its error, with err set. */
int bk_fetch_wait(bk_fetch *f, size_t i, uint64_t need, int *fd,
		  uint64_t *have, bool *done, char *err, size_t errlen);

/* Object i is applied: its file takes a later object. */
void bk_fetch_release(bk_fetch *f, size_t i);

/* Stops the thread (after a fetch under way) and frees f; NULL: no-op. */
void bk_fetch_free(bk_fetch *f);

#endif
