/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Small helpers every file uses: cleanup attributes and a few macros, in the style of systemd's
 * macro.h, so that error paths stay short and nothing leaks. */

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _sentinel_ __attribute__((sentinel))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)
#define _noreturn_ __attribute__((noreturn))
#define _warn_unused_result_ __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

#define USEC_PER_SEC  UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)
#define NSEC_PER_SEC  UINT64_C(1000000000)

/* Takes ownership out of a cleanup variable: returns the value and leaves NULL behind. */
#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) _ptr_ = (p);      \
                (p) = NULL;                     \
                _ptr_;                          \
        })
#define TAKE_FD(fd)                             \
        ({                                      \
                int _fd_ = (fd);                \
                (fd) = -1;                      \
                _fd_;                           \
        })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                 \
        static inline void func##p(type *p) {                   \
                if (*p)                                         \
                        func(*p);                               \
        }

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

/* Closes fd if it is one, keeping errno; returns -1 for `fd = safe_close(fd);`. */
static inline int safe_close(int fd) {
        closep(&fd);
        return -1;
}

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

static inline void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}
#define _cleanup_closedir_ _cleanup_(closedirp)

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)

static inline bool endswith(const char *s, const char *suffix) {
        size_t l = strlen(s), n = strlen(suffix);
        return l >= n && strcmp(s + l - n, suffix) == 0;
}
#define isempty(s) (!(s) || !(s)[0])

static inline const char *strna(const char *s) {
        return s ?: "n/a";
}

static inline const char *strempty(const char *s) {
        return s ?: "";
}

/* Returns a pointer past the prefix when s starts with it, NULL otherwise. */
static inline const char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);
        return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}

/* Makes sure an error code is negative, whatever convention the callee used. */
static inline int negative_errno(int e) {
        return e > 0 ? -e : (e == 0 ? -EIO : e);
}

/* Constant-time comparison: used for tokens so that timing does not reveal a prefix match. */
static inline bool memeq_consttime(const void *a, size_t al, const void *b, size_t bl) {
        const unsigned char *x = a, *y = b;
        unsigned char d = al != bl;
        size_t n = MAX(al, bl);
        for (size_t i = 0; i < n; i++)
                d |= (unsigned char) ((i < al ? x[i] : 0) ^ (i < bl ? y[i] : 0));
        return d == 0;
}
