/*
 * nfdelay: delays packets that iptables sends to NFQUEUE queues, for the
 * emulated regions of tests/integration/regions_harness.py (this kernel
 * has no netem). A test helper, never installed.
 *
 *   nfdelay [-c CAP] QUEUE:MS [QUEUE:MS ...]
 *
 * Rules:
 *  1. Each QUEUE (0..65535) is bound in the network namespace nfdelay runs
 *     in; each packet it receives gets an NF_ACCEPT verdict MS
 *     milliseconds (0..60000) after nfdelay read it, never earlier, and as
 *     soon after that as the process is scheduled: a later packet never
 *     waits on an earlier one's verdict beyond its own due time.
 *  2. The delay of a queue is constant, so its packets are due in arrival
 *     order: one FIFO per queue, and the verdicts keep each queue's order.
 *  3. Memory is bounded: at most CAP (default 4096) packets wait per
 *     queue. The kernel queue is capped at CAP too and, when full, the
 *     kernel drops the packet (as netem drops beyond its limit): a
 *     congested link loses packets, it does not silently lose its delay.
 *     A packet that still finds the FIFO full is dropped (NF_DROP).
 *     Drops are counted and printed at exit.
 *  4. Only the packet's metadata is copied to user space (NFQNL_COPY_META);
 *     nfdelay never changes a packet.
 *  5. "ready\n" is printed on stdout once every queue is bound; the
 *     harness waits for it. SIGTERM or SIGINT: every waiting packet is
 *     accepted at once, the queues are unbound, exit 0. Errors: a message
 *     on stderr and exit 1.
 *  6. iptables rules should use --queue-bypass, so that while no nfdelay
 *     is bound (not started yet, or dead) packets pass undelayed instead
 *     of being dropped.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define NFDELAY_MAX_QUEUES 64
#define NFDELAY_DEFAULT_CAP 4096
#define NFDELAY_MAX_DELAY_MS 60000
#define NFDELAY_RCVBUF (8u << 20)
#define NFDELAY_READ_BATCH 64

/* One waiting packet: its id in its queue, and when it is due. */
struct pending {
	uint32_t id;
	int64_t due_ns;
};

/* One bound queue and its FIFO of waiting packets (a ring of cap). */
struct dqueue {
	uint16_t num;
	int64_t delay_ns;
	struct nfq_q_handle *qh;
	struct pending *ring;
	uint32_t cap;
	uint32_t head; /* index of the oldest waiting packet */
	uint32_t len;
	uint64_t delayed;
	uint64_t dropped;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int verdict(struct dqueue *q, uint32_t id, uint32_t v)
{
	if (nfq_set_verdict(q->qh, id, v, 0, NULL) < 0) {
		int saverr = errno;

		fprintf(stderr,
		        "nfdelay: queue %u: verdict for packet %u: %s\n",
		        q->num, id, strerror(saverr));
		return -saverr;
	}
	return 0;
}

/* libnetfilter_queue's callback: one packet arrived on queue data. */
static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg,
                     struct nfq_data *nfa, void *data)
{
	struct dqueue *q = data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	uint32_t id;

	(void)qh;
	(void)msg;
	if (ph == NULL)
		return 0;
	id = ntohl(ph->packet_id);
	if (q->len == q->cap) {
		q->dropped++;
		return verdict(q, id, NF_DROP);
	}
	q->ring[(q->head + q->len) % q->cap] =
	    (struct pending){.id = id, .due_ns = now_ns() + q->delay_ns};
	q->len++;
	q->delayed++;
	return 0;
}

/* Accepts the packets of q due by now (all of them when now is
 * INT64_MAX). Returns 0 or a negative errno. */
static int release_due(struct dqueue *q, int64_t now)
{
	while (q->len > 0 && q->ring[q->head].due_ns <= now) {
		int rc = verdict(q, q->ring[q->head].id, NF_ACCEPT);

		if (rc < 0)
			return rc;
		q->head = (q->head + 1) % q->cap;
		q->len--;
	}
	return 0;
}

/* The earliest due time over every queue, or -1 when nothing waits. */
static int64_t next_due(const struct dqueue *qs, int n)
{
	int64_t best = -1;

	for (int i = 0; i < n; i++) {
		if (qs[i].len == 0)
			continue;
		int64_t d = qs[i].ring[qs[i].head].due_ns;

		if (best < 0 || d < best)
			best = d;
	}
	return best;
}

/* Parses "QUEUE:MS" into q (num and delay). Returns 0 or -EINVAL. */
static int parse_spec(const char *s, struct dqueue *q)
{
	char *end;
	unsigned long num, ms;

	errno = 0;
	num = strtoul(s, &end, 10);
	if (errno || end == s || *end != ':' || num > 65535)
		return -EINVAL;
	s = end + 1;
	ms = strtoul(s, &end, 10);
	if (errno || end == s || *end != '\0' || ms > NFDELAY_MAX_DELAY_MS)
		return -EINVAL;
	q->num = (uint16_t)num;
	q->delay_ns = (int64_t)ms * 1000000;
	return 0;
}

static int bind_queue(struct nfq_handle *h, struct dqueue *q, uint32_t cap)
{
	q->cap = cap;
	q->ring = calloc(cap, sizeof(*q->ring));
	if (q->ring == NULL)
		return -ENOMEM;
	q->qh = nfq_create_queue(h, q->num, on_packet, q);
	if (q->qh == NULL) {
		int saverr = errno;

		fprintf(stderr,
		        "nfdelay: cannot bind queue %u: %s (another "
		        "program bound to it?)\n",
		        q->num, strerror(saverr));
		return saverr ? -saverr : -EIO;
	}
	if (nfq_set_mode(q->qh, NFQNL_COPY_META, 0) < 0 ||
	    nfq_set_queue_maxlen(q->qh, cap) < 0) {
		int saverr = errno;

		fprintf(stderr, "nfdelay: queue %u: cannot configure: %s\n",
		        q->num, strerror(saverr));
		return saverr ? -saverr : -EIO;
	}
	return 0;
}

/* Reads and handles the messages waiting on fd, at most
 * NFDELAY_READ_BATCH of them, so that due verdicts are not held up by a
 * flood. Returns 0 or a negative errno. ENOBUFS (the socket overflowed)
 * is reported and survived: the kernel already dropped those packets. */
static int read_packets(struct nfq_handle *h, int fd, char *buf, size_t size)
{
	for (int i = 0; i < NFDELAY_READ_BATCH; i++) {
		ssize_t n = recv(fd, buf, size, MSG_DONTWAIT);

		if (n < 0) {
			int saverr = errno;

			if (saverr == EAGAIN || saverr == EINTR)
				return 0;
			if (saverr == ENOBUFS) {
				fprintf(stderr,
				        "nfdelay: netlink socket "
				        "overflowed; packets were lost\n");
				continue;
			}
			fprintf(stderr, "nfdelay: recv: %s\n",
			        strerror(saverr));
			return -saverr;
		}
		nfq_handle_packet(h, buf, (int)n);
	}
	return 0;
}

static int block_signals(int *sfd /* out */)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	*sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return *sfd < 0 ? -errno : 0;
}

/* Delays until SIGTERM/SIGINT; returns 0 or a negative errno. */
static int run(struct nfq_handle *h, struct dqueue *qs, int n, int sfd)
{
	static char buf[1 << 16];
	int fd = nfq_fd(h);

	for (;;) {
		struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN},
		                        {.fd = sfd, .events = POLLIN}};
		int64_t due = next_due(qs, n);
		struct timespec ts, *tp = NULL;
		int rc;

		if (due >= 0) {
			int64_t wait = due - now_ns();

			if (wait < 0)
				wait = 0;
			ts.tv_sec = wait / 1000000000;
			ts.tv_nsec = wait % 1000000000;
			tp = &ts;
		}
		if (ppoll(pfd, 2, tp, NULL) < 0 && errno != EINTR) {
			int saverr = errno;

			fprintf(stderr, "nfdelay: ppoll: %s\n",
			        strerror(saverr));
			return -saverr;
		}
		if (pfd[1].revents & POLLIN)
			return 0;
		if (pfd[0].revents & POLLIN) {
			rc = read_packets(h, fd, buf, sizeof(buf));
			if (rc < 0)
				return rc;
		}
		int64_t now = now_ns();

		for (int i = 0; i < n; i++) {
			rc = release_due(&qs[i], now);
			if (rc < 0)
				return rc;
		}
	}
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: nfdelay [-c CAP] QUEUE:MS [QUEUE:MS ...]\n"
	        "  delays the packets of each NFQUEUE queue by MS ms\n");
}

int main(int argc, char **argv)
{
	struct dqueue qs[NFDELAY_MAX_QUEUES] = {0};
	struct nfq_handle *h = NULL;
	uint32_t cap = NFDELAY_DEFAULT_CAP;
	int n = 0, sfd = -1, opt, rc = 0;

	while ((opt = getopt(argc, argv, "c:")) != -1) {
		if (opt != 'c') {
			usage();
			return 2;
		}
		char *end;
		unsigned long c = strtoul(optarg, &end, 10);

		if (*optarg == '\0' || *end != '\0' || c == 0 || c > 1u << 20) {
			usage();
			return 2;
		}
		cap = (uint32_t)c;
	}
	for (int i = optind; i < argc; i++) {
		if (n == NFDELAY_MAX_QUEUES ||
		    parse_spec(argv[i], &qs[n]) < 0) {
			usage();
			return 2;
		}
		n++;
	}
	if (n == 0) {
		usage();
		return 2;
	}
	rc = block_signals(&sfd);
	if (rc < 0) {
		fprintf(stderr, "nfdelay: signals: %s\n", strerror(-rc));
		goto out;
	}
	h = nfq_open();
	if (h == NULL) {
		rc = -errno;
		fprintf(stderr,
		        "nfdelay: nfq_open: %s (root? module "
		        "nfnetlink_queue?)\n",
		        strerror(errno));
		goto out;
	}
	nfnl_rcvbufsiz(nfq_nfnlh(h), NFDELAY_RCVBUF);
	for (int i = 0; i < n; i++) {
		rc = bind_queue(h, &qs[i], cap);
		if (rc < 0)
			goto out;
	}
	printf("ready\n");
	fflush(stdout);
	rc = run(h, qs, n, sfd);
	for (int i = 0; i < n && rc == 0; i++)
		rc = release_due(&qs[i], INT64_MAX);
out:
	for (int i = 0; i < n; i++) {
		if (qs[i].qh != NULL) {
			fprintf(stderr,
			        "nfdelay: queue %u: %llu delayed, %llu "
			        "dropped (FIFO full)\n",
			        qs[i].num, (unsigned long long)qs[i].delayed,
			        (unsigned long long)qs[i].dropped);
			nfq_destroy_queue(qs[i].qh);
		}
		free(qs[i].ring);
	}
	if (h != NULL)
		nfq_close(h);
	if (sfd >= 0)
		close(sfd);
	return rc < 0 ? 1 : 0;
}
