/*
 * One daemon per data directory and per mount point.
 *
 * Data directory: `ltxfs mount` holds an exclusive flock() on
 * <data.dir>/lock for its whole life and writes who it is into the file
 * (PID, host, mount point, start time). The kernel lets the lock go when
 * the process is gone, however it ends, so a kill -9 leaves nothing to
 * clean up. A second daemon on the same directory (another mount point,
 * another port, the same directory through a symlink or a bind mount) is
 * refused at start with a line naming the holder. On NFS the Linux client
 * turns flock() into a lock on the server (unless mounted with
 * local_lock=flock or local_lock=all), so two hosts sharing a volume
 * exclude each other too, and the file names the holder's host; a file
 * system without locks (ENOLCK) is refused.
 *
 * Mount point: the daemon holds an exclusive flock() on the directory
 * beneath its mount (opened before mounting) for its life, so daemons
 * started at once on one mount point cannot stack mounts: one wins, the
 * others are refused naming it. A dead ltxfs mount left at the mount point
 * by a daemon that was killed (ENOTCONN) is unmounted lazily with a log
 * line; a live one is refused naming its daemon's PID (from /proc/locks);
 * any other mount there is refused.
 *
 * Guard: before its first mount on a directory, the daemon mounts an
 * empty read-only tmpfs named "ltxfs-guard" there and mounts FUSE on top
 * of it. The guard stays after the daemon stops or dies, so whenever no
 * ltxfs serves the mount point, an application writing there gets EROFS
 * instead of writing to the bare directory, where the mount would hide
 * its writes (a connection opened before a stop opens its -wal by path
 * after it: committed there, the writes were acknowledged and lost). The
 * next daemon finds the guard and mounts on it. `umount DIR` removes it
 * once no daemon runs. Without the privilege to mount (fusermount3), the
 * daemon says so and goes on without.
 */
#ifndef CMD_OWNER_H
#define CMD_OWNER_H

#include <stdbool.h>

/* Locks data_dir for this process (kept until it exits: the descriptor
 * is *out_fd, close-on-exec). what describes the holder in the lock file
 * ("mount /litefs", "repair"). When another process holds it, waits up to
 * a few seconds only if that process is on this host and already exiting.
 * Returns 0, or -EBUSY / -errno after printing one line on stderr
 * prefixed with cmd ("ltxfs mount"). */
int cmd_owner_lock_data(const char *cmd, const char *data_dir,
			const char *what, int *out_fd);

/* Claims the mount point for this process: clears a dead ltxfs mount
 * there, refuses a live mount, locks the directory, puts the read-only
 * guard beneath the mount when there is none (and locks it). real gets
 * the absolute path (PATH_MAX bytes) to mount on and to give the
 * watchdog; out_fd the descriptors holding the locks (-1 when unused),
 * kept for the process's life. Returns 0, or -EBUSY / -errno after
 * printing one line on stderr. */
int cmd_owner_claim_mount(const char *cmd, const char *mountpoint,
			  char *real, int out_fd[2]);

#endif
