/*
 * What /proc says about mounts, processes and locks, read without
 * touching the mounts themselves (a dead or not yet served FUSE mount
 * would answer ENOTCONN or hang).
 */
#ifndef CMD_PROCFS_H
#define CMD_PROCFS_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct cmd_mount_entry {
	unsigned major, minor;  /* the mount's device (FUSE: connection) */
	char fstype[64];        /* "fuse.ltxfs", "tmpfs", ... */
	char source[64];        /* "ltxfs", "ltxfs-guard", "/dev/vda" ... */
} cmd_mount_entry;

/* The newest mount whose mount point is exactly path (absolute, no
 * symlinks) in /proc/self/mountinfo. 0 and *out, -ENOENT when path is
 * not a mount point, or -errno. */
int cmd_procfs_mount_at(const char *path, cmd_mount_entry *out);
/* The same for the newest mount at path whose source is source (beneath
 * other mounts or not). */
int cmd_procfs_mount_at_source(const char *path, const char *source,
			       cmd_mount_entry *out);

/* path made absolute without asking the file system about its last
 * component: realpath() of its parent directory, then the last name
 * (when that name is a symlink, the link's target is resolved).
 * 0 or -errno. out holds PATH_MAX bytes. */
int cmd_procfs_mount_path(const char *path, char *out);

/* The state letter (R, S, D, Z...) and the flags of /proc/PID/stat or
 * /proc/PID/task/TID/stat (path). false when unreadable. */
bool cmd_procfs_stat(const char *path, char *out_state,
		     unsigned long *out_flags);

/* Whether process pid exists and is on its way out (exiting or a
 * zombie). */
bool cmd_procfs_exiting(pid_t pid);

/* The PID holding a flock() on the inode ino of device dev (as from
 * stat: st_dev, st_ino; ino 0: any inode of dev), from /proc/locks; 0
 * when none is listed. */
pid_t cmd_procfs_flock_holder(dev_t dev, ino_t ino);

/* Whether capability cap (linux/capability.h number, e.g. 21 for
 * CAP_SYS_ADMIN) is in this process's bounding set (CapBnd of
 * /proc/self/status): without it neither ltxfs nor the set-user-ID
 * fusermount3 it may run can ever hold it. 0 and *out, or -errno
 * (-ENOENT when /proc says nothing). */
int cmd_procfs_cap_bounding(int cap, bool *out);

#endif
