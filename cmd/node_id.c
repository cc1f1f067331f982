#include "node_id.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "lib/io.h"
#include "lib/log.h"

int cmd_node_id_load(const char *data_dir, uint64_t *out)
{
	char path[PATH_MAX], buf[32] = {0};
	uint64_t id = 0;
	size_t got = 0;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/node.id", data_dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		char *end;
		rc = lib_io_read_full(fd, buf, sizeof(buf) - 1, &got);
		close(fd);
		if (rc < 0)
			return rc;
		id = strtoull(buf, &end, 16);
		if (end != buf + 16 || id == 0) {
			log_error("%s is not a 16-digit hex node ID", path);
			return -EBADMSG;
		}
		*out = id;
		return 0;
	}
	if (errno != ENOENT)
		return -errno;
	while (id == 0)
		if (getrandom(&id, sizeof(id), 0) != sizeof(id))
			return -EIO;
	snprintf(buf, sizeof(buf), "%016" PRIx64 "\n", id);
	rc = lib_io_write_file_atomic(data_dir, "node.id", buf, 17);
	if (rc == 0)
		*out = id;
	return rc;
}
