/*
 * The exit watchdog of `ltxfs mount`: a small child process that frees
 * the FUSE connection when the daemon dies in a way that would otherwise
 * hang it for good.
 *
 * Why: the daemon uses its own mount (it takes SQLite's locks there and,
 * on a WAL replica, maps the -shm there as SQLite's readers do). A daemon
 * killed with SIGKILL closes and unmaps those files while exiting; the
 * kernel then writes the mapping's dirty pages back, or flushes, through
 * FUSE, and waits for an answer that no thread of the dying daemon will
 * ever give. The process stays in D state, its mount hangs every user,
 * and only aborting the connection (fusectl) frees them.
 *
 * How: cmd_watchdog_start forks the child before anything else is opened
 * (it holds no descriptor of the mount or /dev/fuse, so it never keeps the
 * connection alive itself). Once mounted, cmd_watchdog_arm sends it the
 * connection number (the minor device number of the mount point). The
 * child then checks the daemon every WATCHDOG_TICK_MS: once the daemon has
 * been exiting (PF_EXITING) for WATCHDOG_GRACE_MS and one of its threads
 * is blocked (state D; its /dev/fuse is then still open, so the number
 * cannot belong to a newer mount), it writes
 * 1 to /sys/fs/fuse/connections/N/abort (mounting fusectl there first if
 * needed), logs it, and ends when the daemon is gone. A clean stop
 * unmounts before exiting, so the child just sees the daemon go.
 */
#ifndef CMD_WATCHDOG_H
#define CMD_WATCHDOG_H

/* Forks the watchdog. Returns the descriptor to arm it with (>= 0), or
 * -errno (the daemon then runs without one; the caller logs). */
int cmd_watchdog_start(void);

/* Tells the watchdog the FUSE connection mounted at real_mountpoint (an
 * absolute path with no symlinks: realpath() taken before mounting, since
 * resolving it afterwards could ask the not yet served mount) and closes
 * fd. Returns 0 or -errno. */
int cmd_watchdog_arm(int fd, const char *real_mountpoint);

#endif
