/* The node's 64-bit ID in <data.dir>/node.id: random once, then kept. */
#ifndef CMD_NODE_ID_H
#define CMD_NODE_ID_H

#include <stdint.h>

int cmd_node_id_load(const char *data_dir, uint64_t *out);

#endif
