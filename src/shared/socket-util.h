/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

/* Any socket address, big enough for every family and readable as each family's own struct without
 * casts: getsockname(), accept() and recvfrom() fill .sa, the code then looks at .in or .in6. */
union sockaddr_union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage storage;
};
