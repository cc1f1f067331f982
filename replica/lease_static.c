/*
 * The static lease (lease.type: static, the default): the configuration
 * fixes the primary. The candidate (lease.candidate: true) is the
 * primary for its whole run, in epoch 1, creating the cluster ID when
 * its data directory has none; every other node is a replica of
 * lease.primary-url. Nothing is acquired or renewed, so there is no
 * write deadline, and the lease cannot move: POST /handoff and POST
 * /promote are refused (409). A primary stopping cleanly still drains
 * its replicas (handoff.c) before it goes.
 */
#include "lease.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "node_i.h"

#define STATIC_EPOCH 1

struct lease_static {
	rep_lease base;
	bool primary;            /* this node is the configured primary */
};

static int st_start(rep_lease *l)
{
	(void)l;
	return 0;
}

static void st_stop(rep_lease *l)
{
	(void)l;
}

static bool st_held(rep_lease *l)
{
	return ((struct lease_static *)l)->primary;
}

static uint64_t st_epoch(rep_lease *l)
{
	(void)l;
	return STATIC_EPOCH;
}

static unsigned st_handoff_begin(rep_lease *l, uint64_t to, char *msg,
				 size_t len)
{
	(void)l;
	(void)to;
	snprintf(msg, len, "handoff needs lease.type etcd");
	return 409;
}

/* A static primary stays the configured primary: stopping, it only
 * stops taking writes (the drain did that already). */
static void st_release(rep_lease *l, const char *why, bool handed_off)
{
	(void)l;
	(void)why;
	(void)handed_off;
}

static void st_stats(rep_lease *l, rep_lease_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->primary = rep_node_is_primary(l->n);
	out->epoch = STATIC_EPOCH;
}

static void st_free(rep_lease *l)
{
	free(l);
}

static const rep_lease_ops static_ops = {
	.type = "static",
	.fixed = true,
	.start = st_start,
	.stop = st_stop,
	.held = st_held,
	.epoch = st_epoch,
	.handoff_begin = st_handoff_begin,
	.release = st_release,
	.stats = st_stats,
	.free = st_free,
};

/* The first primary of a cluster names it. */
static int make_cluster(rep_node *n)
{
	uint64_t id = 0;

	if (rep_node_cluster(n) != 0)
		return 0;
	while (id == 0)
		if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
			id = (uint64_t)lib_clock_wall_ms() * 2654435761u;
	return rep_node_set_cluster(n, id);
}

int rep_lease_static_new(rep_node *n, rep_lease **out)
{
	const rep_lease_opts *o = &rep_node_options(n)->lease;
	struct lease_static *l;
	int rc;

	*out = NULL;
	if (!o->candidate && !o->primary_url[0]) {
		log_error("lease.static: this node is not the primary "
			  "(lease.candidate is false) but lease.primary-url is "
			  "empty; set it to the primary's advertise URL");
		return -EINVAL;
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->base.ops = &static_ops;
	l->base.n = n;
	l->primary = o->candidate;
	if (l->primary) {
		rc = make_cluster(n);
		if (rc == 0 && rep_node_epoch(n) < STATIC_EPOCH)
			rep_node_see_epoch(n, STATIC_EPOCH);
		if (rc == 0)
			rc = rep_role_lead(n, STATIC_EPOCH);
	} else {
		rc = rep_role_follow(n, 0, o->primary_url);
	}
	if (rc < 0) {
		free(l);
		return rc;
	}
	*out = &l->base;
	return 0;
}
