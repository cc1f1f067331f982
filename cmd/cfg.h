/*
 * Configuration: the ltxfs.yml file (docs/CONFIG.md), loaded into a plain
 * value struct.
 *
 * Loading starts from the defaults, overlays the keys the file sets, expands
 * ${VAR} and ${VAR:-default} in scalar values from the environment, and
 * takes http.token from $LTXFS_TOKEN when the file has no such key. Every
 * error (unknown key, wrong type, bad enum, unset variable, YAML syntax) is
 * reported as one line in the caller's errbuf, "FILE:LINE: message", and is
 * not logged: logging is configured from this very file, so the caller
 * prints the line.
 *
 * Ownership: every char * in ltxfs_cfg is owned by the struct and never
 * NULL after a successful cfg_init_defaults or cfg_load_*; cfg_free frees
 * them all and zeroes the struct (cfg_free on a zeroed struct is a no-op).
 */
#ifndef CMD_CFG_H
#define CMD_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Where cfg_load looks when it is given no path, in order. */
#define CFG_FILE_NAME "ltxfs.yml"
#define CFG_FILE_SYSTEM "/etc/ltxfs.yml"
/* Environment variable that supplies http.token when the file has none. */
#define CFG_TOKEN_ENV "LTXFS_TOKEN"

enum cfg_lease_type {
	CFG_LEASE_STATIC = 0,
	CFG_LEASE_ETCD = 1,
};

/* http.metrics-auth: what /metrics and /info need. */
enum cfg_metrics_auth {
	CFG_METRICS_AUTH_TOKEN = 0, /* the cluster or the metrics token */
	CFG_METRICS_AUTH_NONE = 1,  /* nothing */
};

/* A list of owned strings; a single scalar in the file is a 1-item list. */
typedef struct cfg_strlist {
	char **items;
	size_t count;
} cfg_strlist;

/* One command of exec: a shell command line, and whether it runs only on
 * a node that can become primary, once it is (cmd/exec.c). */
typedef struct cfg_exec_cmd {
	char *cmd;
	bool if_candidate;
} cfg_exec_cmd;

/* exec: the commands in order; the last is the application. A single
 * string in the file is a 1-item list. */
typedef struct cfg_execlist {
	cfg_exec_cmd *items;
	size_t count;
} cfg_execlist;

typedef struct ltxfs_cfg {
	struct {
		char *dir;        /* mount point */
		bool allow_other; /* FUSE allow_other */
		bool debug;       /* FUSE debug output */
	} fuse;
	struct {
		char *dir;               /* data directory */
		int64_t retention_ms;    /* keep LTX records at least this long */
		int64_t retention_bytes; /* per-database LTX log cap; 0 = none */
		bool compress;           /* zstd-compress LTX records */
		int zstd_level;          /* 1..19 */
		int64_t apply_timeout_ms; /* replica: longest wait for readers */
	} data;
	struct {
		char *addr;  /* listen address, "[host]:port" */
		char *token; /* cluster bearer token; "" = no auth */
		int64_t max_import_size; /* POST /import bodies; 0 = no cap */
		int64_t ready_max_lag_ms; /* GET /readyz; >= 1 */
		char *metrics_token; /* reads /metrics, /info; "" = none */
		int metrics_auth;    /* enum cfg_metrics_auth */
		/* TLS (docs/CONFIG.md), "" = unset: the server's
		 * certificate and key go together, the client CA needs
		 * them; the client side's CA ("" = the system store),
		 * certificate and key (together) */
		char *tls_cert_file, *tls_key_file, *tls_client_ca_file;
		char *tls_ca_file, *tls_client_cert_file;
		char *tls_client_key_file;
	} http;
	struct {
		int type; /* enum cfg_lease_type */
		bool candidate;
		char *advertise_url; /* this node's URL; "" = unset */
		char *primary_url;   /* static: the primary's URL */
		char *upstream_url;  /* a replica to stream from; "" */
		char *hostname;      /* "" = gethostname() at run time */
		struct {
			cfg_strlist endpoints; /* http(s) URLs */
			char *prefix;
			int64_t ttl_ms; /* >= 1000 */
			char *username;
			char *password;
			/* https endpoints: "" = unset; cert and key go
			 * together (cfg_load_* checks) */
			char *tls_ca_file;   /* "" = the system store */
			char *tls_cert_file; /* client certificate, PEM */
			char *tls_key_file;  /* its private key, PEM */
		} etcd;
	} lease;
	char *region;          /* this node's region; "" = none */
	struct {
		char *addr;      /* listen, "" = no proxy */
		char *target;    /* the application, host:port */
		char *db;        /* the cookie's database */
		char *advertise; /* URL for other nodes; "" = derived */
		int64_t max_lag_ms;         /* 0 = off */
		int64_t read_timeout_ms;    /* the cookie's wait */
		int64_t connect_timeout_ms;
		int64_t idle_timeout_ms;
		int max_conns;
		cfg_strlist passthrough;    /* path patterns */
		cfg_strlist always_forward; /* path patterns of reads */
	} proxy;
	struct {
		int type;        /* enum bk_store_type (backup/store.h) */
		char *dir;       /* file */
		char *endpoint;  /* s3 */
		char *bucket;
		char *prefix;
		char *region;
		char *access_key_id;     /* "" = AWS_ACCESS_KEY_ID */
		char *secret_access_key; /* "" = AWS_SECRET_ACCESS_KEY */
		bool force_path_style;
		int64_t interval_ms;
		int64_t snapshot_interval_ms; /* 0 = never */
		int64_t retention_ms;         /* 0 = keep everything */
		int64_t compaction_interval_ms; /* backup/compact.h */
		bool restore_on_empty; /* cmd/restore_empty.c */
	} backup;
	struct {
		int min_replicas;  /* 0 = asynchronous */
		int64_t timeout_ms;
		int on_timeout;    /* 0 fail, 1 degrade */
	} sync;                /* replication.sync (replica/sync.h) */
	cfg_execlist exec;     /* run once the node is ready (cmd/exec.c) */
	int64_t exec_grace_ms; /* the application's time to exit when
				* ltxfs stops */
	struct {
		int level;  /* LIB_LOG_DEBUG..LIB_LOG_ERROR */
		int format; /* LIB_LOG_TEXT or LIB_LOG_JSON */
	} log;
} ltxfs_cfg;

/* Fills *cfg with the defaults. Returns 0 or -ENOMEM (then *cfg is
 * zeroed). */
int cfg_init_defaults(ltxfs_cfg *cfg);

/*
 * Fills *cfg (overwritten, not freed: it need not be initialised) with the
 * defaults overlaid by the YAML file at path. Returns 0,
 * -errno of open/read (e.g. -ENOENT), -EINVAL for any content error, or
 * -ENOMEM. On error *cfg holds the defaults (or is zeroed on -ENOMEM) and
 * errbuf (when errlen > 0) holds one line naming the file, line and key.
 * The caller frees *cfg with cfg_free either way.
 */
int cfg_load_file(ltxfs_cfg *cfg, const char *path, char *errbuf,
		  size_t errlen);

/* As cfg_load_file, from a NUL-terminated YAML text; name is the file name
 * used in error messages. An empty text gives the defaults (and
 * $LTXFS_TOKEN). */
int cfg_load_string(ltxfs_cfg *cfg, const char *text, const char *name,
		    char *errbuf, size_t errlen);

/*
 * cfg_load_file(path) when path is not NULL; otherwise the first of
 * ./ltxfs.yml and /etc/ltxfs.yml that exists, or the defaults (and
 * $LTXFS_TOKEN) when neither does. *out_path (may be NULL) is set to the
 * file used, or NULL; it points at path or at a string constant.
 */
int cfg_load(ltxfs_cfg *cfg, const char *path, const char **out_path,
	     char *errbuf, size_t errlen);

/*
 * Writes *cfg as YAML that cfg_load_* reads back. Secrets (http.token,
 * lease.etcd.password) are printed as "<redacted>" when set. With comments,
 * every key is preceded by a comment giving its meaning and default.
 */
void cfg_print(const ltxfs_cfg *cfg, FILE *f, bool comments);

/* Frees the strings of *cfg and zeroes it. */
void cfg_free(ltxfs_cfg *cfg);

/* Parses a duration: "500ms", "10s", "2m", "1h", sequences such as "1m30s",
 * or plain seconds ("10"). Returns 0 or -EINVAL (also on overflow). */
int cfg_parse_duration(const char *s, int64_t *out_ms);

/* `ltxfs config [-c FILE] | --defaults`; returns the exit code. */
int cmd_config(int argc, char **argv);

#endif
