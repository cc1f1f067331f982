/* Configuration sections `lease` and `lease.etcd`: which node is primary
 * (docs/CONFIG.md). */
#include "cfg_i.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

static const char *const type_names[] = {"static", "etcd", NULL};

static const struct cfg_key lease_keys[] = {
	{.name = "lease.type", .type = T_ENUM, .off = CFG_OFF(lease.type),
	 .def = "static", .names = type_names,
	 .help = "static: the primary is fixed by configuration;\n"
		 "etcd: nodes compete for a lease in etcd."},
	{.name = "lease.candidate", .type = T_BOOL,
	 .off = CFG_OFF(lease.candidate), .def = "true",
	 .help = "Whether this node may become primary. With static, the\n"
		 "candidate is the primary and the others are replicas."},
	{.name = "lease.advertise-url", .type = T_STR,
	 .off = CFG_OFF(lease.advertise_url), .def = "", .flags = F_URL,
	 .help = "URL other nodes reach this node at, e.g.\n"
		 "http://node1:20202."},
	{.name = "lease.primary-url", .type = T_STR,
	 .off = CFG_OFF(lease.primary_url), .def = "", .flags = F_URL,
	 .help = "static: URL of the primary; needed on replicas."},
	{.name = "lease.upstream-url", .type = T_STR,
	 .off = CFG_OFF(lease.upstream_url), .def = "", .flags = F_URL,
	 .help = "A replica streams from this node (a replica that follows\n"
		 "the primary) instead of the primary; when it cannot, from\n"
		 "the region's choice or the primary (docs/REGIONS.md).\n"
		 "Empty: chosen by region, else the primary."},
	{.name = "lease.hostname", .type = T_STR,
	 .off = CFG_OFF(lease.hostname), .def = "",
	 .help = "Name of this node shown to others. Empty: gethostname()."},
};

static const struct cfg_key etcd_keys[] = {
	{.name = "lease.etcd.endpoints", .type = T_LIST,
	 .off = CFG_OFF(lease.etcd.endpoints), .def = NULL, .flags = F_URL,
	 .help = "etcd URLs (a list, or one string); required with etcd."},
	{.name = "lease.etcd.prefix", .type = T_STR,
	 .off = CFG_OFF(lease.etcd.prefix), .def = "/ltxfs",
	 .flags = F_NONEMPTY,
	 .help = "Key prefix of this cluster's keys in etcd."},
	{.name = "lease.etcd.ttl", .type = T_DURATION,
	 .off = CFG_OFF(lease.etcd.ttl_ms), .def = "10s", .min = 1000,
	 .max = INT64_MAX,
	 .help = "Lease time to live, at least 1s. A primary that cannot\n"
		 "renew turns read-only before this has passed."},
	{.name = "lease.etcd.username", .type = T_STR,
	 .off = CFG_OFF(lease.etcd.username), .def = "",
	 .help = "etcd user name. Empty: no authentication."},
	{.name = "lease.etcd.password", .type = T_STR,
	 .off = CFG_OFF(lease.etcd.password), .def = "", .flags = F_SECRET,
	 .help = "etcd password."},
	{.name = "lease.etcd.tls-ca-file", .type = T_STR,
	 .off = CFG_OFF(lease.etcd.tls_ca_file), .def = "",
	 .help = "PEM file of the CA(s) an https endpoint's certificate must\n"
		 "chain to. Empty: the system's CA store. Verification of\n"
		 "the certificate and its name is never turned off."},
	{.name = "lease.etcd.tls-cert-file", .type = T_STR,
	 .off = CFG_OFF(lease.etcd.tls_cert_file), .def = "",
	 .help = "PEM client certificate for etcd (--client-cert-auth);\n"
		 "needs lease.etcd.tls-key-file."},
	{.name = "lease.etcd.tls-key-file", .type = T_STR,
	 .off = CFG_OFF(lease.etcd.tls_key_file), .def = "",
	 .help = "PEM private key of lease.etcd.tls-cert-file."},
};

/* lease.type etcd needs its endpoints; a node does not stream from
 * itself (the same URL written twice; other spellings of it are refused
 * by the node itself: replica/cascade.h, C2). */
static int finish_lease(struct cfg_loader *ld)
{
	const ltxfs_cfg *cfg = cfg_loader_cfg(ld);

	if (cfg->lease.upstream_url[0] &&
	    strcmp(cfg->lease.upstream_url, cfg->lease.advertise_url) == 0)
		return cfg_loader_error(ld,
					cfg_loader_line(ld, "lease.upstream-url"),
					"lease.upstream-url is this node's own "
					"lease.advertise-url (%s): a node cannot "
					"stream from itself",
					cfg->lease.upstream_url);

	if (cfg->lease.type == CFG_LEASE_ETCD &&
	    cfg->lease.etcd.endpoints.count == 0)
		return cfg_loader_error(ld, cfg_loader_line(ld, "lease.type"),
					"lease.type is etcd but "
					"lease.etcd.endpoints is empty");
	return 0;
}

/* lease.etcd.tls-*: a client certificate needs its key and the other way
 * round; TLS settings with an http:// endpoint would send the lease in
 * clear text while the file says otherwise. Whether the files can be
 * read is checked when the node starts (cmd/mount_cmd.c). */
static int finish_etcd(struct cfg_loader *ld)
{
	const ltxfs_cfg *cfg = cfg_loader_cfg(ld);
	const char *cert = cfg->lease.etcd.tls_cert_file;
	const char *key = cfg->lease.etcd.tls_key_file;
	const char *ca = cfg->lease.etcd.tls_ca_file;
	const cfg_strlist *eps = &cfg->lease.etcd.endpoints;
	size_t cert_line = cfg_loader_line(ld, "lease.etcd.tls-cert-file");
	size_t key_line = cfg_loader_line(ld, "lease.etcd.tls-key-file");
	size_t ca_line = cfg_loader_line(ld, "lease.etcd.tls-ca-file");

	if (!*cert != !*key)
		return cfg_loader_error(
			ld, *cert ? cert_line : key_line,
			"lease.etcd.tls-cert-file and lease.etcd.tls-key-file "
			"go together: %s is set but %s is empty",
			*cert ? "lease.etcd.tls-cert-file"
			      : "lease.etcd.tls-key-file",
			*cert ? "lease.etcd.tls-key-file"
			      : "lease.etcd.tls-cert-file");
	if (!*cert && !*ca)
		return 0;
	for (size_t i = 0; i < eps->count; i++)
		if (strncasecmp(eps->items[i], "https://", 8) != 0)
			return cfg_loader_error(
				ld, *ca ? ca_line : cert_line,
				"lease.etcd.tls-* is set but endpoint \"%s\" "
				"of lease.etcd.endpoints is not https://",
				eps->items[i]);
	return 0;
}

const struct cfg_section cfg_lease_section = {
	.name = "lease",
	.help = "Which node is primary.",
	.keys = lease_keys,
	.nkeys = sizeof(lease_keys) / sizeof(lease_keys[0]),
	.finish = finish_lease,
};

const struct cfg_section cfg_lease_etcd_section = {
	.name = "lease.etcd",
	.help = "etcd v3 lease (lease.type: etcd).",
	.keys = etcd_keys,
	.nkeys = sizeof(etcd_keys) / sizeof(etcd_keys[0]),
	.finish = finish_etcd,
};
