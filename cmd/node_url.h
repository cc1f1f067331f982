/* The URL a command line tool reaches the local node's HTTP API at. */
#ifndef CMD_NODE_URL_H
#define CMD_NODE_URL_H

#include <stdbool.h>
#include <stddef.h>

/* Writes "http://HOST:PORT" ("https://" with https: the node has
 * http.tls-cert-file) for http.addr ("[HOST]:PORT", "HOST:PORT",
 * ":PORT") into out: no host or a wildcard host (0.0.0.0, *, ::, [::])
 * becomes the loopback address of that family. Returns 0, -EINVAL (no
 * port, host too long) or -ENAMETOOLONG (out too small). */
int cmd_node_url_from_addr(const char *addr, bool https, char *out,
			   size_t n);

#endif
