/* One set of TLS files loaded and checked (tls.h, rule T1): see
 * tls_i.h. */
#include "tls_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/x509.h>

#include "lib/log.h"

void rep_tls_creds_free(struct rep_tls_creds *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->npcert; i++)
		gnutls_pcert_deinit(&c->pcert[i]);
	free(c->pcert);
	if (c->key)
		gnutls_privkey_deinit(c->key);
	if (c->ca)
		gnutls_x509_trust_list_deinit(c->ca, 1);
	free(c);
}

/* The file's bytes; a missing or unreadable one logged naming the key. */
static int load_file(const char *key, const char *path, gnutls_datum_t *d)
{
	FILE *f = fopen(path, "rb");
	int rc;

	if (!f) {
		rc = -errno;
		log_error("%s %s: cannot read: %s", key, path, strerror(-rc));
		return rc;
	}
	fclose(f);
	rc = gnutls_load_file(path, d);
	if (rc < 0) {
		log_error("%s %s: cannot read: %s", key, path,
			  gnutls_strerror(rc));
		return -EIO;
	}
	return 0;
}

static void fmt_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* T1's dates of the leaf certificate. */
static int check_dates(const char *key, const char *path,
		       gnutls_x509_crt_t crt)
{
	time_t from = gnutls_x509_crt_get_activation_time(crt);
	time_t to = gnutls_x509_crt_get_expiration_time(crt);
	time_t now = time(NULL);
	char a[32], b[32];

	fmt_time(from, a, sizeof(a));
	fmt_time(to, b, sizeof(b));
	if (now > to) {
		log_error("%s %s: the certificate expired on %s (valid from "
			  "%s to %s)", key, path, b, a, b);
		return -EINVAL;
	}
	if (now < from) {
		log_error("%s %s: the certificate is not valid before %s "
			  "(valid from %s to %s)", key, path, a, a, b);
		return -EINVAL;
	}
	return 0;
}

/* The DER of a public key, for comparing a key with a certificate. */
static int pub_der(gnutls_pubkey_t pub, gnutls_datum_t *out)
{
	return gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, out);
}

static int key_matches(gnutls_privkey_t key, gnutls_pubkey_t cert_pub)
{
	gnutls_pubkey_t pub = NULL;
	gnutls_datum_t a = {NULL, 0}, b = {NULL, 0};
	int same = 0;

	if (gnutls_pubkey_init(&pub) < 0)
		return 0;
	if (gnutls_pubkey_import_privkey(pub, key, 0, 0) == 0 &&
	    pub_der(pub, &a) == 0 && pub_der(cert_pub, &b) == 0)
		same = a.size == b.size && memcmp(a.data, b.data, a.size) == 0;
	gnutls_free(a.data);
	gnutls_free(b.data);
	gnutls_pubkey_deinit(pub);
	return same;
}

static void fingerprint(gnutls_x509_crt_t crt, char *out, size_t len)
{
	unsigned char md[32];
	size_t n = sizeof(md);

	out[0] = '\0';
	if (gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, md, &n) <
	    0)
		return;
	for (size_t i = 0; i < n && 2 * i + 2 < len; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The chain of cert_path into c->pcert, its dates checked. */
static int load_chain(struct rep_tls_creds *c, const char *ckey,
		      const char *path)
{
	gnutls_datum_t d = {NULL, 0};
	gnutls_x509_crt_t *crts = NULL;
	unsigned n = 0;
	int rc = load_file(ckey, path, &d);

	if (rc < 0)
		return rc;
	if (gnutls_x509_crt_list_import2(&crts, &n, &d, GNUTLS_X509_FMT_PEM,
					 0) < 0 || n == 0) {
		log_error("%s %s: no PEM certificate in it", ckey, path);
		rc = -EINVAL;
		goto out;
	}
	rc = check_dates(ckey, path, crts[0]);
	if (rc < 0)
		goto out;
	fingerprint(crts[0], c->fpr, sizeof(c->fpr));
	c->pcert = calloc(n, sizeof(*c->pcert));
	if (!c->pcert) {
		rc = -ENOMEM;
		goto out;
	}
	if (gnutls_pcert_import_x509_list(c->pcert, crts, &n, 0) < 0) {
		log_error("%s %s: the certificates cannot be used", ckey,
			  path);
		free(c->pcert);
		c->pcert = NULL;
		rc = -EINVAL;
		goto out;
	}
	c->npcert = n;
out:
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crts[i]);
	gnutls_free(crts);
	gnutls_free(d.data);
	return rc;
}

static int load_key(struct rep_tls_creds *c, const char *kkey, const char *path,
		    const char *ckey, const char *cert_path)
{
	gnutls_datum_t d = {NULL, 0};
	int rc = load_file(kkey, path, &d);

	if (rc < 0)
		return rc;
	rc = gnutls_privkey_init(&c->key);
	if (rc == 0)
		rc = gnutls_privkey_import_x509_raw(c->key, &d,
						    GNUTLS_X509_FMT_PEM, NULL,
						    0);
	gnutls_free(d.data);
	if (rc < 0) {
		log_error("%s %s: not a PEM private key (without a "
			  "passphrase): %s", kkey, path, gnutls_strerror(rc));
		return -EINVAL;
	}
	if (!key_matches(c->key, c->pcert[0].pubkey)) {
		log_error("%s %s: the key does not match the certificate of "
			  "%s %s", kkey, path, ckey, cert_path);
		return -EINVAL;
	}
	return 0;
}

static int load_ca(struct rep_tls_creds *c, const char *path)
{
	gnutls_datum_t d = {NULL, 0};
	int rc = load_file("http.tls-client-ca-file", path, &d);

	if (rc < 0)
		return rc;
	rc = gnutls_x509_trust_list_init(&c->ca, 0);
	if (rc == 0)
		rc = gnutls_x509_trust_list_add_trust_mem(
			c->ca, &d, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
	gnutls_free(d.data);
	if (rc <= 0) {
		log_error("http.tls-client-ca-file %s: no PEM certificate in "
			  "it", path);
		return -EINVAL;
	}
	return 0;
}

int rep_tls_creds_load(const char *cert, const char *ckey, const char *key,
		       const char *kkey, const char *client_ca,
		       struct rep_tls_creds **out)
{
	struct rep_tls_creds *c = calloc(1, sizeof(*c));
	int rc;

	*out = NULL;
	if (!c)
		return -ENOMEM;
	rc = load_chain(c, ckey, cert);
	if (rc == 0)
		rc = load_key(c, kkey, key, ckey, cert);
	if (rc == 0 && client_ca && client_ca[0])
		rc = load_ca(c, client_ca);
	if (rc < 0) {
		rep_tls_creds_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

int rep_tls_check_pair(const char *cert, const char *cert_key,
		       const char *key, const char *key_key)
{
	struct rep_tls_creds *c;
	int rc = rep_tls_creds_load(cert, cert_key, key, key_key, NULL, &c);

	rep_tls_creds_free(c);
	return rc;
}
