/*
 * Internals of the FUSE adapter shared by fs/mount.c (databases and their
 * companions) and fs/mount_sj.c (super-journals).
 */
#ifndef FS_MOUNT_I_H
#define FS_MOUNT_I_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "mount.h"

#define FS_NAME_MAX 200
#define FS_CACHE_SECONDS 3600.0

/* --- mount.c, for mount_sj.c (each takes and lets go of the mount's mu) */

/* The slot of the database name: 0, or -ENOENT when it is not served. */
int fs_mount_slot_of(fs_mount *m, const char *name, size_t *out);
/* Slot s's database name into buf: 0, or -ENOENT. */
int fs_mount_slot_name(fs_mount *m, size_t s, char *buf, size_t n);
bool fs_mount_is_replica(fs_mount *m);
const char *fs_mount_data_dir(const fs_mount *m);

/* --- mount_sj.c: super-journal entries (see its top); each handler
 * sends exactly one reply. */

/* Whether ino is a super-journal's. */
bool fs_mount_sj_ino(fuse_ino_t ino);
void fs_mount_sj_lookup(fuse_req_t req, fs_mount *m, const char *name);
void fs_mount_sj_getattr(fuse_req_t req, fs_mount *m, fuse_ino_t ino);
void fs_mount_sj_setattr(fuse_req_t req, fs_mount *m, fuse_ino_t ino,
			 struct stat *attr, int to_set,
			 struct fuse_file_info *fi);
void fs_mount_sj_open(fuse_req_t req, fs_mount *m, fuse_ino_t ino,
		      struct fuse_file_info *fi);
void fs_mount_sj_create(fuse_req_t req, fs_mount *m, const char *name,
			mode_t mode, struct fuse_file_info *fi);
void fs_mount_sj_read(fuse_req_t req, size_t size, off_t off,
		      struct fuse_file_info *fi);
void fs_mount_sj_write(fuse_req_t req, const char *buf, size_t size,
		       off_t off, struct fuse_file_info *fi);
void fs_mount_sj_fsync(fuse_req_t req, fs_mount *m, bool datasync,
		       struct fuse_file_info *fi);
void fs_mount_sj_release(fuse_req_t req, struct fuse_file_info *fi);
void fs_mount_sj_unlink(fuse_req_t req, fs_mount *m, const char *name);
/* fn for each stored super-journal whose main database is served, with
 * its inode; a non-zero return stops and is returned. */
typedef int (*fs_mount_sj_list_fn)(void *ctx, const char *name,
				   fuse_ino_t ino);
int fs_mount_sj_list(fs_mount *m, fs_mount_sj_list_fn fn, void *ctx);

#endif
