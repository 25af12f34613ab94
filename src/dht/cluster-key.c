/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include "cluster-key.h"
#include "dht-id.h"
#include "file-util.h"
#include "hex.h"
#include "log.h"

int cluster_key_load_file(const char *path, EVP_PKEY **ret) {
        _cleanup_fclose_ FILE *f = NULL;
        EVP_PKEY *k;
        struct stat st;

        f = fopen(path, "re");
        if (!f)
                return -errno;
        if (fstat(fileno(f), &st) >= 0 && (st.st_mode & 0077))
                log_warning("%s is readable by others than its owner (mode %04o); it should be 0600.",
                            path, (unsigned) (st.st_mode & 07777));
        k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        if (!k)
                return -EINVAL;
        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_ED25519) {
                EVP_PKEY_free(k);
                return -EINVAL;
        }
        *ret = k;
        return 0;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free_all);

int cluster_key_write_file(const char *path, EVP_PKEY *key, bool replace) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new(BIO_s_mem());
        char *pem;
        long n;

        if (!b)
                return -ENOMEM;
        if (PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) != 1)
                return -EIO;
        n = BIO_get_mem_data(b, &pem);
        if (n <= 0)
                return -EIO;
        return write_file_atomic(path, pem, (size_t) n, 0600, WRITE_FILE_SYNC | (replace ? 0 : WRITE_FILE_NO_REPLACE));
}

int cluster_key_public_hex(EVP_PKEY *key, char ret[CLUSTER_KEY_HEX_MAX]) {
        uint8_t pub[BEP44_KEY_SIZE];
        int r = bep44_key_public(key, pub);
        if (r < 0)
                return r;
        hex_encode(pub, sizeof(pub), ret);
        return 0;
}

int cluster_key_load_or_generate(const char *state_dir, EVP_PKEY **ret) {
        _cleanup_free_ char *path = NULL, *pub_path = NULL;
        _cleanup_pkey_ EVP_PKEY *k = NULL;
        char hex[CLUSTER_KEY_HEX_MAX];
        int r;

        if (asprintf(&path, "%s/" CLUSTER_KEY_FILE, state_dir) < 0 ||
            asprintf(&pub_path, "%s/" CLUSTER_PUB_FILE, state_dir) < 0)
                return log_oom();

        r = cluster_key_load_file(path, &k);
        if (r == -ENOENT) {
                _cleanup_pkey_ EVP_PKEY *fresh = NULL;

                r = bep44_key_generate(&fresh);
                if (r < 0)
                        return log_error_errno(r, "Cannot generate the cluster key: %m");
                r = cluster_key_write_file(path, fresh, false);
                if (r == -EEXIST)
                        r = cluster_key_load_file(path, &k); /* another replica was quicker: use its key */
                else if (r >= 0) {
                        k = TAKE_PTR(fresh);
                        (void) cluster_key_public_hex(k, hex);
                        log_notice("Generated the cluster key %s; its public half is %s.", path, hex);
                }
        }
        if (r < 0)
                return log_error_errno(r, "Cannot load the cluster key %s: %m", path);

        r = cluster_key_public_hex(k, hex);
        if (r < 0)
                return r;
        {
                char line[CLUSTER_KEY_HEX_MAX + 1];
                int n = snprintf(line, sizeof(line), "%s\n", hex);
                (void) write_file_atomic(pub_path, line, (size_t) n, 0644, WRITE_FILE_SYNC);
        }
        *ret = TAKE_PTR(k);
        return 0;
}

static int b64_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+' || c == '-')
                return 62;
        if (c == '/' || c == '_')
                return 63;
        return -1;
}

int cluster_key_parse_public(const char *s, uint8_t ret[BEP44_KEY_SIZE]) {
        uint8_t out[BEP44_KEY_SIZE + 3];
        size_t l, n = 0;
        uint32_t acc = 0;
        unsigned bits = 0;

        if (!s)
                return -EINVAL;
        l = strlen(s);
        if (l == 2 * BEP44_KEY_SIZE)
                return hex_decode(s, ret, BEP44_KEY_SIZE);
        if (l == 44 && s[43] == '=')
                l = 43;
        if (l != 43)
                return -EINVAL;
        for (size_t i = 0; i < l; i++) {
                int v = b64_value(s[i]);
                if (v < 0)
                        return -EINVAL;
                acc = acc << 6 | (uint32_t) v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[n++] = (uint8_t) (acc >> bits);
                }
        }
        if (n != BEP44_KEY_SIZE || (acc & ((1U << bits) - 1)) != 0)
                return -EINVAL; /* 43 characters carry 258 bits: the last 2 must be zero */
        memcpy(ret, out, BEP44_KEY_SIZE);
        return 0;
}

void cluster_info_hash(const char *cluster_name, uint8_t ret[DHT_ID_SIZE]) {
        _cleanup_free_ char *s = NULL;

        if (asprintf(&s, "mc-control:%s", cluster_name ?: "") < 0) {
                memset(ret, 0, DHT_ID_SIZE);
                return;
        }
        sha1(s, strlen(s), ret);
}
