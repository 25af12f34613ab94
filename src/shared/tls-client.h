/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* How the daemons that call the control (mc-agent, mc-seeder and its commands) reach it over HTTPS:
 * the CA that must have signed the control's certificate, and optionally a client certificate (mutual
 * TLS; the control takes an agent's subject CN as its node id). In a daemon's option table:
 *
 *     static const ConfigOption options[] = { ..., TLS_CLIENT_CONFIG_OPTIONS(Config, tls) };
 *
 * gives CONTROL_CA, TLS_CERT and TLS_KEY (MC_CONTROL_CA, ... in the environment); TLS_CLIENT_CA_OPTION
 * only the first. libcurl verifies the
 * control's certificate and host name on every https:// request whatever is set; CONTROL_CA only
 * replaces the system's CAs. The files are read by libcurl for each new connection, so replacing them
 * takes effect without a restart. */

#include <stdbool.h>

#include "macro.h"

typedef struct TlsClientSettings {
        char *ca_file;          /* PEM CAs for the control's certificate; "" or NULL: the system's */
        char *cert_file;        /* PEM client certificate, or ""/NULL */
        char *key_file;         /* its PEM private key */
} TlsClientSettings;

#define TLS_CLIENT_CA_OPTION(type, member)                                                              \
        { "CONTROL_CA", NULL, CONFIG_STRING, offsetof(type, member.ca_file), 0, 0, "",                  \
          "PEM CA certificate(s) the control's HTTPS certificate must be signed by (empty: the system's CAs)" }
/* Client certificates authenticate agents only (a user such as the seeder needs its token). */
#define TLS_CLIENT_CONFIG_OPTIONS(type, member)                                                         \
        TLS_CLIENT_CA_OPTION(type, member),                                                             \
        { "TLS_CERT", NULL, CONFIG_STRING, offsetof(type, member.cert_file), 0, 0, "",                  \
          "PEM client certificate for the control (mutual TLS; its CN is this node's id)" },           \
        { "TLS_KEY", NULL, CONFIG_STRING, offsetof(type, member.key_file), 0, 0, "",                    \
          "PEM private key of TLS_CERT" }

/* Checks the settings against the control URLs: each file readable, TLS_CERT and TLS_KEY together,
 * and says loudly when a URL is plain http:// to another machine (the token would cross the network
 * in clear). Returns 0 or a negative errno, logged. */
int tls_client_settings_check(const TlsClientSettings *s, char *const *control_urls);
bool tls_client_has_cert(const TlsClientSettings *s);

/* MC_EVENT=control_tls_failed for a request to url that failed in TLS (CurlResponse.tls_failed): the
 * control's certificate did not verify against CONTROL_CA, or ours could not be used. At error
 * priority at most every 30 s per process (the calls retry), at debug in between. */
void tls_client_log_failure(const char *url, const char *message);

/* Replicas found in the DHT come as http://ADDRESS:PORT (an announcement carries no scheme): with a
 * CONTROL_CA or a client certificate configured, the controls serve HTTPS, so those become https://.
 * Changes urls (NULL-terminated) in place; -ENOMEM. */
int tls_client_found_urls(const TlsClientSettings *s, char **urls);
