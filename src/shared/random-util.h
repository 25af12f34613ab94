/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "macro.h"

/* Fills buf with n bytes from getrandom(): task ids, DHT secrets, hash-map keys. Aborts if the kernel
 * cannot provide randomness (only without the system call), since there is no safe way on. */
void random_bytes(void *buf, size_t n);
