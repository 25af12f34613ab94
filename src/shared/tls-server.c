/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <stdio.h>

#include "id-util.h"
#include "log.h"
#include "tls-server.h"

#define PEM_FILE_MAX (1024 * 1024)
#define CHAIN_MAX 16

/* One certificate chain and its key, as served. */
typedef struct TlsCredential {
        gnutls_pcert_st pcerts[CHAIN_MAX];
        unsigned n_pcerts;
        gnutls_privkey_t key;
        int64_t not_after;
        struct TlsCredential *retired_next;
} TlsCredential;

struct TlsServer {
        char *cert_file, *key_file, *client_ca_file;
        TlsCredential *current;
        /* Credentials replaced by a reload. GnuTLS takes what the callback returns without a
         * reference, and a handshake that got it may still be going on; they are kept (a few KiB
         * each) until the server is freed rather than guessed to be unused. */
        TlsCredential *retired;
        gnutls_x509_trust_list_t client_trust;
        /* The client CA as read at start: given to libmicrohttpd, it makes every handshake ask for a
         * client certificate. What verifies the certificate is client_trust, which reloads. */
        char *client_ca_pem;
};

/* GnuTLS's certificate callback has no user data; there is one server per process. */
static TlsServer *the_server = NULL;

static int read_pem_file(const char *what, const char *path, gnutls_datum_t *ret) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t n;

        f = fopen(path, "re");
        if (!f)
                return log_error_errno(errno, "%s=%s: cannot open: %m", what, path);
        buf = malloc(PEM_FILE_MAX + 1);
        if (!buf)
                return log_oom();
        n = fread(buf, 1, PEM_FILE_MAX + 1, f);
        if (ferror(f))
                return log_error_errno(EIO, "%s=%s: cannot read.", what, path);
        if (n > PEM_FILE_MAX)
                return log_error_errno(EFBIG, "%s=%s: larger than %d bytes; not a PEM file.", what, path, PEM_FILE_MAX);
        if (n == 0)
                return log_error_errno(EINVAL, "%s=%s: the file is empty.", what, path);
        buf[n] = 0;
        *ret = (gnutls_datum_t) { .data = (unsigned char *) TAKE_PTR(buf), .size = (unsigned) n };
        return 0;
}

static void datum_free_secret(gnutls_datum_t *d) {
        if (!d->data)
                return;
        explicit_bzero(d->data, d->size);
        free(d->data);
        *d = (gnutls_datum_t) {};
}

static void datum_free(gnutls_datum_t *d) {
        free(d->data);
        *d = (gnutls_datum_t) {};
}

static TlsCredential *credential_free(TlsCredential *c) {
        if (!c)
                return NULL;
        for (unsigned i = 0; i < c->n_pcerts; i++)
                gnutls_pcert_deinit(&c->pcerts[i]);
        if (c->key)
                gnutls_privkey_deinit(c->key);
        free(c);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(TlsCredential *, credential_free);

static void x509_list_free(gnutls_x509_crt_t *crts, unsigned n) {
        for (unsigned i = 0; i < n; i++)
                gnutls_x509_crt_deinit(crts[i]);
        gnutls_free(crts);
}

/* Whether the private key is the certificate's: the same public key id. A mismatch would only show
 * as every handshake failing. */
static int key_matches(gnutls_privkey_t key, gnutls_pubkey_t cert_pub) {
        gnutls_pubkey_t pub = NULL;
        unsigned char a[64], b[64];
        size_t na = sizeof(a), nb = sizeof(b);
        int k;

        if (gnutls_pubkey_init(&pub) < 0)
                return -ENOMEM;
        k = gnutls_pubkey_import_privkey(pub, key, 0, 0);
        if (k >= 0)
                k = gnutls_pubkey_get_key_id(pub, GNUTLS_KEYID_USE_SHA256, a, &na);
        if (k >= 0)
                k = gnutls_pubkey_get_key_id(cert_pub, GNUTLS_KEYID_USE_SHA256, b, &nb);
        gnutls_pubkey_deinit(pub);
        if (k < 0)
                return -EINVAL;
        return na == nb && memcmp(a, b, na) == 0;
}

static int credential_load(const char *cert_file, const char *key_file, TlsCredential **ret) {
        _cleanup_(credential_freep) TlsCredential *c = NULL;
        gnutls_datum_t cert_pem = {}, key_pem = {};
        gnutls_x509_crt_t *crts = NULL;
        unsigned n = 0;
        int k, r;

        c = calloc(1, sizeof(TlsCredential));
        if (!c)
                return log_oom();

        r = read_pem_file("TLS_CERT", cert_file, &cert_pem);
        if (r < 0)
                return r;
        k = gnutls_x509_crt_list_import2(&crts, &n, &cert_pem, GNUTLS_X509_FMT_PEM, 0);
        datum_free(&cert_pem);
        if (k < 0 || n == 0)
                return log_error_errno(EINVAL, "TLS_CERT=%s: no PEM certificate could be read (%s).", cert_file,
                                       k < 0 ? gnutls_strerror(k) : "none found");
        if (n > CHAIN_MAX) {
                x509_list_free(crts, n);
                return log_error_errno(E2BIG, "TLS_CERT=%s: more than %d certificates.", cert_file, CHAIN_MAX);
        }
        c->not_after = (int64_t) gnutls_x509_crt_get_expiration_time(crts[0]);
        c->n_pcerts = n;
        k = gnutls_pcert_import_x509_list(c->pcerts, crts, &c->n_pcerts, 0);
        x509_list_free(crts, n);
        if (k < 0) {
                c->n_pcerts = 0;
                return log_error_errno(EINVAL, "TLS_CERT=%s: %s", cert_file, gnutls_strerror(k));
        }

        r = read_pem_file("TLS_KEY", key_file, &key_pem);
        if (r < 0)
                return r;
        k = gnutls_privkey_init(&c->key);
        if (k >= 0)
                k = gnutls_privkey_import_x509_raw(c->key, &key_pem, GNUTLS_X509_FMT_PEM, NULL, 0);
        datum_free_secret(&key_pem);
        if (k < 0)
                return log_error_errno(EINVAL, "TLS_KEY=%s: no unencrypted PEM private key could be read (%s).",
                                       key_file, gnutls_strerror(k));
        r = key_matches(c->key, c->pcerts[0].pubkey);
        if (r < 0)
                return log_error_errno(r, "TLS_KEY=%s: cannot compare the key with the certificate.", key_file);
        if (r == 0)
                return log_error_errno(EINVAL, "TLS_KEY=%s is not the private key of the certificate in TLS_CERT=%s.",
                                       key_file, cert_file);
        if (c->not_after < (int64_t) time(NULL))
                log_warning("TLS_CERT=%s has expired: clients will refuse it.", cert_file);

        *ret = TAKE_PTR(c);
        return 0;
}

static int client_trust_load(const char *path, gnutls_x509_trust_list_t *ret_trust, char **ret_pem) {
        gnutls_x509_trust_list_t tl = NULL;
        gnutls_datum_t pem = {};
        int k, r;

        r = read_pem_file("TLS_CLIENT_CA", path, &pem);
        if (r < 0)
                return r;
        k = gnutls_x509_trust_list_init(&tl, 0);
        if (k < 0) {
                datum_free(&pem);
                return log_oom();
        }
        k = gnutls_x509_trust_list_add_trust_mem(tl, &pem, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
        if (k <= 0) {
                gnutls_x509_trust_list_deinit(tl, 1);
                datum_free(&pem);
                return log_error_errno(EINVAL, "TLS_CLIENT_CA=%s: no PEM certificate could be read (%s).", path,
                                       k < 0 ? gnutls_strerror(k) : "none found");
        }
        *ret_trust = tl;
        if (ret_pem)
                *ret_pem = (char *) pem.data;
        else
                datum_free(&pem);
        return 0;
}

/* gnutls_certificate_retrieve_function2: called in each handshake. */
static int on_retrieve_cert(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                            const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length, gnutls_pcert_st **ret_pcert,
                            unsigned *ret_n, gnutls_privkey_t *ret_key) {
        TlsServer *t = the_server;

        if (!t || !t->current)
                return -1;
        *ret_pcert = t->current->pcerts;
        *ret_n = t->current->n_pcerts;
        *ret_key = t->current->key;
        return 0;
}

TlsServer *tls_server_free(TlsServer *t) {
        if (!t)
                return NULL;
        if (the_server == t)
                the_server = NULL;
        credential_free(t->current);
        while (t->retired) {
                TlsCredential *c = t->retired;
                t->retired = c->retired_next;
                credential_free(c);
        }
        if (t->client_trust)
                gnutls_x509_trust_list_deinit(t->client_trust, 1);
        free(t->client_ca_pem);
        free(t->cert_file);
        free(t->key_file);
        free(t->client_ca_file);
        free(t);
        return NULL;
}

int tls_server_new(const TlsServerFiles *files, TlsServer **ret) {
        _cleanup_(tls_server_freep) TlsServer *t = NULL;
        int r;

        assert(files);
        assert(ret);

        if (the_server)
                return log_error_errno(EBUSY, "Only one TLS server per process.");
        if (isempty(files->cert_file) || isempty(files->key_file))
                return log_error_errno(EINVAL, "TLS needs both TLS_CERT and TLS_KEY.");

        t = calloc(1, sizeof(TlsServer));
        if (!t)
                return log_oom();
        t->cert_file = strdup(files->cert_file);
        t->key_file = strdup(files->key_file);
        if (!t->cert_file || !t->key_file)
                return log_oom();
        if (!isempty(files->client_ca_file)) {
                t->client_ca_file = strdup(files->client_ca_file);
                if (!t->client_ca_file)
                        return log_oom();
        }

        r = credential_load(t->cert_file, t->key_file, &t->current);
        if (r < 0)
                return r;
        if (t->client_ca_file) {
                r = client_trust_load(t->client_ca_file, &t->client_trust, &t->client_ca_pem);
                if (r < 0)
                        return r;
        }
        the_server = t;
        *ret = TAKE_PTR(t);
        return 0;
}

int tls_server_reload(TlsServer *t) {
        TlsCredential *c = NULL;
        gnutls_x509_trust_list_t tl = NULL;
        int r;

        assert(t);

        /* Everything is read before anything changes: a half-rotated pair is refused as a whole. */
        r = credential_load(t->cert_file, t->key_file, &c);
        if (r < 0)
                return r;
        if (t->client_ca_file) {
                r = client_trust_load(t->client_ca_file, &tl, NULL);
                if (r < 0) {
                        credential_free(c);
                        return r;
                }
                gnutls_x509_trust_list_deinit(t->client_trust, 1);
                t->client_trust = tl;
        }
        t->current->retired_next = t->retired;
        t->retired = t->current;
        t->current = c;
        return 0;
}

void tls_server_mhd_options(TlsServer *t, void *items) {
        struct MHD_OptionItem *o = items;
        size_t n = 0;

        assert(t);

        o[n++] = (struct MHD_OptionItem) { MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *) on_retrieve_cert };
        /* TLS 1.2 and 1.3 only: every client of ours (libcurl, curl, Python) speaks them. */
        o[n++] = (struct MHD_OptionItem) { MHD_OPTION_HTTPS_PRIORITIES, 0,
                                           (void *) "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2" };
        if (t->client_ca_pem)
                o[n++] = (struct MHD_OptionItem) { MHD_OPTION_HTTPS_MEM_TRUST, 0, t->client_ca_pem };
        o[n++] = (struct MHD_OptionItem) { MHD_OPTION_END, 0, NULL };
        assert(n <= TLS_SERVER_MHD_OPTIONS_MAX);
}

bool tls_server_has_client_ca(const TlsServer *t) {
        return t && t->client_trust;
}

int64_t tls_server_cert_expiry(const TlsServer *t) {
        return t->current->not_after;
}

/* Why a client certificate was refused, from GnuTLS's verification status: the most telling first. */
static const struct {
        unsigned flag;
        const char *reason;
} verify_reasons[] = {
        { GNUTLS_CERT_EXPIRED,            "the client certificate has expired" },
        { GNUTLS_CERT_NOT_ACTIVATED,      "the client certificate is not valid yet" },
        { GNUTLS_CERT_REVOKED,            "the client certificate is revoked" },
        { GNUTLS_CERT_SIGNER_NOT_FOUND,   "the client certificate is not issued by a CA of TLS_CLIENT_CA" },
        { GNUTLS_CERT_PURPOSE_MISMATCH,   "the client certificate is not for client authentication (extendedKeyUsage clientAuth)" },
        { GNUTLS_CERT_INSECURE_ALGORITHM, "the client certificate is signed with an insecure algorithm" },
};

int tls_server_peer_name(TlsServer *t, void *session, char *ret_name, size_t size, const char **ret_reason) {
        gnutls_x509_crt_t crts[CHAIN_MAX] = {};
        const gnutls_datum_t *peers;
        unsigned n_peers = 0, n = 0, status = 0;
        char cn[ID_MAX + 2];
        size_t cn_size = sizeof(cn);
        gnutls_typed_vdata_st purpose = {
                .type = GNUTLS_DT_KEY_PURPOSE_OID,
                .data = (void *) GNUTLS_KP_TLS_WWW_CLIENT,
        };
        int k, r;

        assert(ret_name);
        assert(size > ID_MAX);
        assert(ret_reason);

        *ret_reason = NULL;
        if (!t || !t->client_trust || !session)
                return 0;
        if (gnutls_certificate_type_get(session) != GNUTLS_CRT_X509)
                return 0;
        peers = gnutls_certificate_get_peers(session, &n_peers);
        if (!peers || n_peers == 0)
                return 0;

        r = -EPERM;
        *ret_reason = "the client certificate cannot be parsed";
        for (; n < MIN(n_peers, (unsigned) CHAIN_MAX); n++)
                if (gnutls_x509_crt_init(&crts[n]) < 0 ||
                    gnutls_x509_crt_import(crts[n], &peers[n], GNUTLS_X509_FMT_DER) < 0) {
                        n++;
                        goto finish;
                }

        k = gnutls_x509_trust_list_verify_crt2(t->client_trust, crts, n, &purpose, 1, 0, &status, NULL);
        if (k < 0)
                goto finish;
        if (status != 0) {
                *ret_reason = "the client certificate does not verify against TLS_CLIENT_CA";
                for (size_t i = 0; i < ELEMENTSOF(verify_reasons); i++)
                        if (status & verify_reasons[i].flag) {
                                *ret_reason = verify_reasons[i].reason;
                                break;
                        }
                goto finish;
        }
        k = gnutls_x509_crt_get_dn_by_oid(crts[0], GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cn_size);
        if (k < 0 || cn_size >= sizeof(cn) || strlen(cn) != cn_size || !id_is_valid(cn)) {
                *ret_reason = "the client certificate's common name (CN) is not a node id";
                goto finish;
        }
        snprintf(ret_name, size, "%s", cn);
        *ret_reason = NULL;
        r = 1;
finish:
        for (unsigned i = 0; i < n; i++)
                if (crts[i])
                        gnutls_x509_crt_deinit(crts[i]);
        return r;
}
