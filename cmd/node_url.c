#include "node_url.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int cmd_node_url_from_addr(const char *addr, bool https, char *out,
			   size_t n)
{
	const char *colon = strrchr(addr, ':');
	char host[300];
	size_t hl;

	if (!colon || !colon[1])
		return -EINVAL;
	hl = (size_t)(colon - addr);
	if (hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, addr, hl);
	host[hl] = '\0';
	if (hl == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	else if (strcmp(host, "[::]") == 0 || strcmp(host, "::") == 0)
		snprintf(host, sizeof(host), "[::1]");
	if ((size_t)snprintf(out, n, "%s://%s:%s", https ? "https" : "http",
			     host, colon + 1) >= n)
		return -ENAMETOOLONG;
	return 0;
}
