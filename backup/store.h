/*
 * The backup store: where backup objects live (docs/BACKUP.md). A store
 * is a flat namespace of keys ("prefix/db/l0/NAME.ltx"; '/' separates
 * levels) holding immutable objects, with four operations (list also
 * as "the first keys after a key"), one file per backend behind this
 * seam:
 *
 *   store_file.c  a directory: a key is a path under it; put writes a
 *                 temporary file, fsyncs it, renames it over the key and
 *                 fsyncs the directory
 *   store_s3.c    an S3-compatible server over libcurl, signed with
 *                 CURLOPT_AWS_SIGV4 ("aws:amz:REGION:s3")
 *
 * Every operation returns 0 or a negative errno, with one line in err
 * that names the store and the key: -ENOENT no such key, -EACCES the
 * store refused the credentials, -EIO the store could not be reached or
 * answered something else. Nothing is logged here: the caller decides
 * (the uploader logs once per change of state).
 *
 * Thread safety: a store is used by one thread at a time.
 */
#ifndef BACKUP_STORE_H
#define BACKUP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bk_store_type {
	BK_STORE_NONE = 0,
	BK_STORE_FILE = 1,
	BK_STORE_S3 = 2,
};

typedef struct bk_store_opts {
	int type;                      /* enum bk_store_type */
	const char *dir;               /* file */
	const char *endpoint;          /* s3: http(s)://host[:port] */
	const char *bucket, *region;
	const char *access_key_id;     /* "": AWS_ACCESS_KEY_ID */
	const char *secret_access_key; /* "": AWS_SECRET_ACCESS_KEY */
	bool force_path_style;         /* endpoint/bucket/key, else
					* bucket.endpoint/key */
	long timeout_ms;               /* one request; 0: 30 s */
} bk_store_opts;

typedef struct bk_store bk_store;

/* A list of keys (malloc'd strings), sorted. */
typedef struct bk_keys {
	char **v;
	size_t n, cap;
} bk_keys;
void bk_keys_free(bk_keys *k);
int bk_keys_push(bk_keys *k, const char *key);

int bk_store_open(const bk_store_opts *o, bk_store **out, char *err,
		  size_t errlen);
void bk_store_free(bk_store *s);
/* "file:DIR" or "s3:ENDPOINT/BUCKET", for messages. */
const char *bk_store_desc(const bk_store *s);

/* Stores len bytes of fd from offset 0 under key (replacing it). */
int bk_store_put(bk_store *s, const char *key, int fd, uint64_t len,
		 char *err, size_t errlen);
/* Writes the object's bytes [off, off+len) (len 0: to its end) to fd at
 * its current offset; *out_len the bytes written. */
int bk_store_get(bk_store *s, const char *key, uint64_t off, uint64_t len,
		 int fd, uint64_t *out_len, char *err, size_t errlen);
/* Appends to out every key that starts with prefix (which ends in '/'),
 * at any depth below it for s3, directly below it for file; sorted. */
int bk_store_list(bk_store *s, const char *prefix, bk_keys *out, char *err,
		  size_t errlen);
/* Appends to out the first max (> 0) keys of bk_store_list(prefix) that
 * sort after the key after (byte order), sorted: one cheap request on
 * s3 (ListObjectsV2 start-after, max-keys), a directory scan on file. */
int bk_store_list_after(bk_store *s, const char *prefix, const char *after,
			size_t max, bk_keys *out, char *err, size_t errlen);
int bk_store_delete(bk_store *s, const char *key, char *err, size_t errlen);

/* The backends' table (store.c dispatches through it). */
struct bk_store_ops {
	int (*put)(bk_store *s, const char *key, int fd, uint64_t len,
		   char *err, size_t errlen);
	int (*get)(bk_store *s, const char *key, uint64_t off, uint64_t len,
		   int fd, uint64_t *out_len, char *err, size_t errlen);
	/* after NULL: every key; max 0: no limit (a backend may return
	 * more than max: bk_store_list_after cuts). */
	int (*list)(bk_store *s, const char *prefix, const char *after,
		    size_t max, bk_keys *out, char *err, size_t errlen);
	int (*del)(bk_store *s, const char *key, char *err, size_t errlen);
	void (*free)(bk_store *s);
};

struct bk_store {
	const struct bk_store_ops *ops;
	char desc[512];
};

int bk_store_file_open(const bk_store_opts *o, bk_store **out, char *err,
		       size_t errlen);
int bk_store_s3_open(const bk_store_opts *o, bk_store **out, char *err,
		     size_t errlen);

#endif
