/*
 * Extensions of the node (node.h, rep_node_ext_add): components that
 * live beside the node, not inside it (the proxy), and show their state
 * in GET /metrics and GET /info. The list is fixed with the commit
 * subscribers when the node starts, so the server reads it without a
 * lock.
 */
#include "node_i.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

int rep_node_ext_add(rep_node *n, const rep_node_ext *e)
{
	if (n->subs.fixed)
		return -EBUSY;
	if (n->exts.count == REP_EXTS_MAX)
		return -ENOSPC;
	n->exts.e[n->exts.count++] = *e;
	return 0;
}

void rep_ext_metrics(rep_node *n, FILE *f)
{
	for (size_t i = 0; i < n->exts.count; i++)
		if (n->exts.e[i].metrics)
			n->exts.e[i].metrics(n->exts.e[i].ctx, f);
}

void rep_ext_info(rep_node *n, json_t *root)
{
	for (size_t i = 0; i < n->exts.count; i++) {
		const rep_node_ext *e = &n->exts.e[i];
		char *text = e->info ? e->info(e->ctx) : NULL;
		json_t *v = text ? json_loads(text, 0, NULL) : NULL;
		if (v)
			json_object_set_new(root, e->name, v);
		free(text);
	}
}
