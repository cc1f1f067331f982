#!/bin/sh
# The example application: on the primary it adds a row naming this
# host, then prints how many rows it reads, and exits.
set -e
db=/litefs/app.db
if [ "$LTXFS_PRIMARY" = 1 ]; then
	sqlite3 "$db" "CREATE TABLE IF NOT EXISTS hello(who TEXT);
		INSERT INTO hello VALUES('$(hostname)')"
fi
echo "app: $(sqlite3 "$db" 'SELECT count(*) FROM hello') rows"
