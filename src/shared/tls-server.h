/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The TLS side of the HTTP server (GnuTLS, as libmicrohttpd uses it): the server's certificate chain
 * and key, and optionally a CA that client certificates are checked against (mutual TLS).
 *
 * The certificate is handed to GnuTLS per handshake (libmicrohttpd's MHD_OPTION_HTTPS_CERT_CALLBACK),
 * so tls_server_reload() makes new connections get the new one without touching the listener or the
 * connections open: libmicrohttpd 0.9.75 cannot swap the certificate of a running daemon otherwise.
 *
 * A client certificate is asked for (not required) whenever a client CA is configured; what it is
 * worth is decided per request by tls_server_peer_name(), against the client CA loaded last. The
 * identity it carries is the subject's common name (CN), which must be a valid id (id-util.h), and the
 * certificate must be allowed for TLS client authentication (extended key usage clientAuth): a server
 * certificate of the same CA names no client. */

#include <stddef.h>

#include "macro.h"

typedef struct TlsServer TlsServer;

typedef struct TlsServerFiles {
        const char *cert_file;          /* PEM: the server's certificate, then its intermediates */
        const char *key_file;           /* PEM: its private key (PKCS#8 or the traditional forms) */
        const char *client_ca_file;     /* PEM: CAs that sign client certificates; NULL/"": no mTLS */
} TlsServerFiles;

/* Reads and checks the files (the key must match the certificate). Only one TlsServer may exist at a
 * time (GnuTLS's callback carries no user data). Returns a negative errno, logged, naming the file. */
int tls_server_new(const TlsServerFiles *files, TlsServer **ret);
TlsServer *tls_server_free(TlsServer *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(TlsServer *, tls_server_free);

/* Reads the same files again. On any error nothing changes (the previous certificate keeps being
 * served) and a negative errno is returned, logged. Handshakes in progress finish with what they
 * started with. */
int tls_server_reload(TlsServer *t);

/* What libmicrohttpd needs to serve HTTPS: fills items (struct MHD_OptionItem[], at least
 * TLS_SERVER_MHD_OPTIONS_MAX) ending with MHD_OPTION_END, for MHD_OPTION_ARRAY. */
#define TLS_SERVER_MHD_OPTIONS_MAX 4
void tls_server_mhd_options(TlsServer *t, void *items);

bool tls_server_has_client_ca(const TlsServer *t);
/* The certificate's notAfter, for messages (seconds since the epoch). */
int64_t tls_server_cert_expiry(const TlsServer *t);

/* The identity a connection's client certificate proves. session is the connection's
 * gnutls_session_t. Returns 1 and the CN in ret_name (size bytes, at least ID_MAX + 1) for a
 * certificate that verifies against the client CA and may authenticate a client; 0 when the client
 * sent none (or no client CA is configured); -EPERM when it sent one that does not verify, with a
 * static explanation in *ret_reason. */
int tls_server_peer_name(TlsServer *t, void *session, char *ret_name, size_t size, const char **ret_reason);
