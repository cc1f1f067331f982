/* The backup store's dispatch and key lists: see store.h. */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bk_keys_free(bk_keys *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->v[i]);
	free(k->v);
	*k = (bk_keys){0};
}

int bk_keys_push(bk_keys *k, const char *key)
{
	char *dup;

	if (k->n == k->cap) {
		size_t cap = k->cap ? k->cap * 2 : 64;
		char **v = realloc(k->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		k->v = v;
		k->cap = cap;
	}
	dup = strdup(key);
	if (!dup)
		return -ENOMEM;
	k->v[k->n++] = dup;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int bk_store_open(const bk_store_opts *o, bk_store **out, char *err,
		  size_t errlen)
{
	*out = NULL;
	switch (o->type) {
	case BK_STORE_FILE:
		return bk_store_file_open(o, out, err, errlen);
	case BK_STORE_S3:
		return bk_store_s3_open(o, out, err, errlen);
	default:
		snprintf(err, errlen, "backup: no store configured "
			 "(backup.type)");
		return -EINVAL;
	}
}

void bk_store_free(bk_store *s)
{
	if (s)
		s->ops->free(s);
}

const char *bk_store_desc(const bk_store *s)
{
	return s->desc;
}

int bk_store_put(bk_store *s, const char *key, int fd, uint64_t len,
		 char *err, size_t errlen)
{
	return s->ops->put(s, key, fd, len, err, errlen);
}

int bk_store_get(bk_store *s, const char *key, uint64_t off, uint64_t len,
		 int fd, uint64_t *out_len, char *err, size_t errlen)
{
	*out_len = 0;
	return s->ops->get(s, key, off, len, fd, out_len, err, errlen);
}

int bk_store_list_after(bk_store *s, const char *prefix, const char *after,
			size_t max, bk_keys *out, char *err, size_t errlen)
{
	size_t from = out->n;
	int rc = s->ops->list(s, prefix, after, max, out, err, errlen);

	if (rc == 0 && out->n > from)
		qsort(out->v + from, out->n - from, sizeof(char *), cmp_str);
	while (rc == 0 && max > 0 && out->n - from > max)
		free(out->v[--out->n]);
	return rc;
}

int bk_store_list(bk_store *s, const char *prefix, bk_keys *out, char *err,
		  size_t errlen)
{
	return bk_store_list_after(s, prefix, NULL, 0, out, err, errlen);
}

int bk_store_delete(bk_store *s, const char *key, char *err, size_t errlen)
{
	return s->ops->del(s, key, err, errlen);
}
