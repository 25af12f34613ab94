/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon-util.h"
#include "log.h"
#include "tls-client.h"

static int check_readable(const char *key, const char *path) {
        if (isempty(path))
                return 0;
        if (access(path, R_OK) < 0)
                return log_error_errno(errno, "%s=%s cannot be read: %m", key, path);
        return 0;
}

/* Whether an http:// URL names this machine: then nothing crosses the network. */
static bool url_is_loopback(const char *url) {
        static const char *const local[] = { "http://127.", "http://localhost:", "http://localhost/",
                                             "http://[::1]" };
        for (size_t i = 0; i < ELEMENTSOF(local); i++)
                if (startswith(url, local[i]))
                        return true;
        return streq(url, "http://localhost");
}

bool tls_client_has_cert(const TlsClientSettings *s) {
        return s && !isempty(s->cert_file);
}

int tls_client_settings_check(const TlsClientSettings *s, char *const *control_urls) {
        int r;

        if (isempty(s->cert_file) != isempty(s->key_file))
                return log_error_errno(EINVAL, "A client certificate needs both TLS_CERT and TLS_KEY (only %s is set).",
                                       isempty(s->cert_file) ? "TLS_KEY" : "TLS_CERT");
        r = check_readable("CONTROL_CA", s->ca_file);
        if (r >= 0)
                r = check_readable("TLS_CERT", s->cert_file);
        if (r >= 0)
                r = check_readable("TLS_KEY", s->key_file);
        if (r < 0)
                return r;

        for (char *const *u = control_urls; u && *u; u++) {
                if (!startswith(*u, "http://") || url_is_loopback(*u))
                        continue;
                log_warning("*** CONTROL_URLS names %s, plain HTTP to another machine: the token crosses the "
                            "network in clear. Use https:// (docs/tls.md). ***", *u);
        }
        return 0;
}

void tls_client_log_failure(const char *url, const char *message) {
        static uint64_t last_usec = 0;
        uint64_t now = now_usec();
        bool loud = last_usec == 0 || now - last_usec >= 30 * USEC_PER_SEC;

        if (loud)
                last_usec = now;
        log_event(loud ? LOG_ERR : LOG_DEBUG, MC_EVENT_CONTROL_TLS_FAILED,
                  LOG_FIELDS("CONTROL_URL", strna(url), "MC_REASON", strna(message)),
                  "TLS with the control %s failed: %s. Check CONTROL_CA (the CA that signed the control's "
                  "certificate), the URL's host name against the certificate, and TLS_CERT/TLS_KEY.",
                  strna(url), strna(message));
}

int tls_client_found_urls(const TlsClientSettings *s, char **urls) {
        if (isempty(s->ca_file) && isempty(s->cert_file))
                return 0;
        for (char **u = urls; u && *u; u++) {
                const char *rest = startswith(*u, "http://");
                char *n;

                if (!rest)
                        continue;
                if (asprintf(&n, "https://%s", rest) < 0)
                        return -ENOMEM;
                free(*u);
                *u = n;
        }
        return 0;
}
