/*
 * A replica's acknowledgements to a synchronous primary (ack_cli.c has
 * the rules, sync.h the primary's side). Used by the stream client only.
 */
#ifndef REPLICA_ACK_CLI_H
#define REPLICA_ACK_CLI_H

#include <stdint.h>

#include "ltx/pos.h"

struct rep_node;
typedef struct rep_ack_cli rep_ack_cli;

int rep_ack_cli_new(struct rep_node *n, rep_ack_cli **out);
void rep_ack_cli_free(rep_ack_cli *a);
/* The primary that asked for acknowledgements (its base URL) and the
 * epoch of its stream; NULL: none (the stream ended: pending ones are
 * dropped). */
void rep_ack_target(rep_ack_cli *a, const char *url, uint64_t epoch);
/* db's log holds pos durably (fsynced) (rule A1). */
void rep_ack_note(rep_ack_cli *a, const char *db, ltx_pos pos);

#endif
