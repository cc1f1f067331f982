/* ltxfs: the command-line entry point; dispatches to subcommands. */
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "cmd.h"
#include "config.h"
#include "replica/dbcopy.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ltxfs COMMAND [ARGS]\n"
		"\n"
		"commands:\n"
		"  mount [-c ltxfs.yml] [-- CMD [ARG...]]\n"
		"                             mount and serve (foreground); "
		"run CMD (or exec)\n"
		"  verify [-c ltxfs.yml] [DB...]  replay each LTX log and "
		"compare with the database;\n"
		"                             exit 0 all proved, 1 any failed, "
		"2 some not proved\n"
		"  repair [-c ltxfs.yml] DB   a new LTX log for a database "
		"whose log is damaged (node stopped)\n"
		"  export [-c F|--url U] DB OUT  copy a database out of a "
		"node (OUT - is stdout)\n"
		"  import [-c F|--url U] DB IN   a database file in, as the "
		"primary's next transaction\n"
		"  restore [-c F] DB OUT [--txid HEX | --timestamp T] "
		"[--dry-run]\n"
		"                             rebuild a database from the "
		"backup store\n"
		"  backup ls [-c F] DB        the backup's restorable "
		"ranges\n"
		"  backup compact [-c F] DB   merge its L0 objects into L1 "
		"objects now\n"
		"  promote [-c F|--url U]     make this node the primary "
		"(graceful handoff, etcd lease)\n"
		"  ltx dump FILE              show an LTX file's header, pages "
		"and checksums\n"
		"  ltx verify FILE...         check LTX files; exit 0 when all "
		"are valid\n"
		"  ltx checksum DBFILE        print a SQLite file's database "
		"checksum\n"
		"  ltx apply DBFILE LTX...    apply LTX files in order, "
		"checking checksums\n"
		"  ltx encode-db DBFILE OUT   write a snapshot LTX of a "
		"database\n"
		"  config [-c FILE]           print the effective "
		"configuration\n"
		"  config --defaults          print every key with its "
		"default\n"
		"  version                    print the version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "mount") == 0)
		return cmd_mount(argc - 1, argv + 1);
	if (strcmp(argv[1], "verify") == 0)
		return cmd_verify(argc - 1, argv + 1);
	if (strcmp(argv[1], "repair") == 0)
		return cmd_repair(argc - 1, argv + 1);
	if (strcmp(argv[1], "export") == 0)
		return cmd_export(argc - 1, argv + 1);
	if (strcmp(argv[1], "import") == 0)
		return cmd_import(argc - 1, argv + 1);
	/* Internal, not in the usage: the copy of GET /export and POST
	 * /import, which the daemon runs as a child (replica/dbcopy.h). */
	if (strcmp(argv[1], REP_DBCOPY_CMD) == 0)
		return rep_dbcopy_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "restore") == 0)
		return cmd_restore(argc - 1, argv + 1);
	if (strcmp(argv[1], "backup") == 0)
		return cmd_backup(argc - 1, argv + 1);
	if (strcmp(argv[1], "promote") == 0)
		return cmd_promote(argc - 1, argv + 1);
	if (strcmp(argv[1], "ltx") == 0)
		return cmd_ltx(argc - 1, argv + 1);
	if (strcmp(argv[1], "config") == 0)
		return cmd_config(argc - 1, argv + 1);
	if (strcmp(argv[1], "version") == 0 ||
	    strcmp(argv[1], "--version") == 0) {
		printf("ltxfs %s\n", LTXFS_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "ltxfs: unknown command \"%s\"\n", argv[1]);
	usage(stderr);
	return 2;
}
