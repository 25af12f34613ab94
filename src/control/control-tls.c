/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-control's transport security: HTTPS from TLS_CERT and TLS_KEY (mutual TLS with TLS_CLIENT_CA),
 * the loud warning when it serves plain HTTP where other machines can reach it, and SIGHUP, which
 * re-reads the tokens file and the certificate without closing the listener or any connection. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>

#include "control.h"
#include "daemon-util.h"
#include "log.h"

int control_tls_setup(Control *c) {
        const ControlConfig *cfg = &c->config;
        int r;

        if (isempty(cfg->tls_cert) && isempty(cfg->tls_key)) {
                if (!isempty(cfg->tls_client_ca))
                        return log_error_errno(EINVAL, "TLS_CLIENT_CA=%s is set but TLS_CERT and TLS_KEY are not: "
                                               "client certificates need HTTPS.", cfg->tls_client_ca);
                return 0;
        }
        if (isempty(cfg->tls_cert) || isempty(cfg->tls_key))
                return log_error_errno(EINVAL, "HTTPS needs both TLS_CERT and TLS_KEY (only %s is set).",
                                       isempty(cfg->tls_cert) ? "TLS_KEY" : "TLS_CERT");

        r = tls_server_new(&(TlsServerFiles) {
                        .cert_file = cfg->tls_cert,
                        .key_file = cfg->tls_key,
                        .client_ca_file = cfg->tls_client_ca,
                }, &c->tls);
        if (r < 0)
                return r;
        log_info("Serving HTTPS with %s%s%s.", cfg->tls_cert,
                 tls_server_has_client_ca(c->tls) ? "; client certificates checked against " : "",
                 tls_server_has_client_ca(c->tls) ? cfg->tls_client_ca : "");
        return 0;
}

/* Whether fd listens on a loopback address only. */
static bool socket_is_loopback(int fd) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);

        if (getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return false;
        if (sa.ss_family == AF_INET)
                return (ntohl(((struct sockaddr_in *) &sa)->sin_addr.s_addr) >> 24) == 127;
        if (sa.ss_family == AF_INET6) {
                const struct in6_addr *a = &((struct sockaddr_in6 *) &sa)->sin6_addr;
                return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
        }
        return sa.ss_family == AF_UNIX;
}

void control_warn_plaintext(Control *c, const int *fds, size_t n_fds) {
        bool reachable = false;

        if (c->tls)
                return;
        for (size_t i = 0; i < n_fds; i++)
                if (!socket_is_loopback(fds[i]))
                        reachable = true;
        log_event(reachable ? LOG_WARNING : LOG_NOTICE, MC_EVENT_PLAINTEXT_HTTP,
                  LOG_FIELDS("REACHABLE", reachable ? "yes" : "no"),
                  reachable ?
                  "*** PLAIN HTTP on an address other machines can reach: user and agent tokens cross the network "
                  "in clear. Set TLS_CERT and TLS_KEY (docs/tls.md); plain HTTP is for development. ***" :
                  "Plain HTTP, on loopback only (set TLS_CERT and TLS_KEY to serve other machines; docs/tls.md).");
}

int control_reload(Control *c) {
        _cleanup_(auth_freep) Auth *a = NULL;
        char tokens[32];
        int r;

        /* Both read before either is replaced: a reload either happens as a whole or not at all. */
        r = auth_new(c->config.tokens_file, c->config.control_token, c->config.disable_auth, &a);
        if (r >= 0 && !c->config.disable_auth && auth_n_tokens(a) == 0)
                r = log_error_errno(ENOKEY, "%s holds no token now.", c->config.tokens_file);
        if (r >= 0 && c->tls)
                r = tls_server_reload(c->tls);
        if (r < 0) {
                char e[16];
                snprintf(e, sizeof(e), "%d", -r);
                log_event(LOG_ERR, MC_EVENT_CREDENTIALS_RELOAD_FAILED, LOG_FIELDS("ERRNO", e),
                          "Reload failed; still using the tokens%s loaded before.", c->tls ? " and certificate" : "");
                return r;
        }
        /* Requests take the identity they need from the Auth synchronously, within the callback of
         * the HTTP server, and this runs from the event loop: nothing points into the old one now. */
        auth_free(c->auth);
        c->auth = TAKE_PTR(a);

        snprintf(tokens, sizeof(tokens), "%zu", auth_n_tokens(c->auth));
        log_event(LOG_INFO, MC_EVENT_CREDENTIALS_RELOADED, LOG_FIELDS("TOKENS", tokens, "TLS", c->tls ? "yes" : "no"),
                  "Reloaded %s tokens%s.", tokens, c->tls ? " and the TLS certificate" : "");
        daemon_notify_status("Serving; reloaded %s tokens%s.", tokens, c->tls ? " and the TLS certificate" : "");
        return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) control_reload(userdata);
        return 0;
}

int control_reload_setup(Control *c) {
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block SIGHUP: %m");
        r = sd_event_add_signal(c->event, NULL, SIGHUP, on_sighup, c);
        if (r < 0)
                return log_error_errno(r, "Failed to watch SIGHUP: %m");
        return 0;
}
