/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "bencode.h"
#include "bep44.h"
#include "hex.h"
#include "id-util.h"
#include "task-record.h"
#include "task-status.h"

int task_record_salt(const char *id, char ret[BEP44_SALT_MAX + 1], size_t *ret_len) {
        int l;

        if (!id_is_valid(id))
                return -EINVAL;
        l = snprintf(ret, BEP44_SALT_MAX + 1, "task/%s", id);
        if (l < 0 || l > BEP44_SALT_MAX) {
                uint8_t h[DHT_ID_SIZE];
                char hex[DHT_ID_HEX_MAX];

                sha1(id, strlen(id), h);
                l = snprintf(ret, BEP44_SALT_MAX + 1, "task/~%s", hex_encode(h, sizeof(h), hex));
        }
        *ret_len = (size_t) l;
        return 0;
}

int task_record_encode(const TaskRecord *t, uint8_t *buf, size_t size, size_t *ret_len) {
        BeWriter w;

        if (!id_is_valid(t->id) || task_status_from_string(t->status) < 0 || t->attempt < 0 || t->lease_token < 0 ||
            (t->node && strlen(t->node) > TASK_NODE_MAX))
                return -EINVAL;
        be_writer_init(&w, buf, MIN(size, (size_t) BEP44_VALUE_MAX));
        be_put_dict(&w);
        be_put_cstr(&w, "attempt");
        be_put_int(&w, t->attempt);
        be_put_cstr(&w, "fmt");
        be_put_int(&w, 1);
        be_put_cstr(&w, "id");
        be_put_cstr(&w, t->id);
        be_put_cstr(&w, "lease_token");
        be_put_int(&w, t->lease_token);
        if (!isempty(t->node)) {
                be_put_cstr(&w, "node");
                be_put_cstr(&w, t->node);
        }
        be_put_cstr(&w, "status");
        be_put_cstr(&w, t->status);
        be_put_cstr(&w, "updated_at");
        be_put_int(&w, t->updated_at_usec);
        be_put_end(&w);
        return be_writer_finish(&w, ret_len);
}

static int copy_str(const BeNode *n, char *out, size_t size) {
        if (!n || n->type != BE_STR || n->count >= size || memchr(n->s, 0, n->count))
                return -EBADMSG;
        memcpy(out, n->s, n->count);
        out[n->count] = 0;
        return 0;
}

int task_record_decode(const void *v, size_t n, TaskRecordData *ret) {
        static const char *const keys[] = { "attempt", "fmt", "id", "lease_token", "node", "status", "updated_at" };
        BeNode nodes[64];
        const BeNode *root, *k, *x;
        TaskRecordData t = {};

        if (n > BEP44_VALUE_MAX || be_decode(v, n, NULL, nodes, ELEMENTSOF(nodes), NULL) < 0)
                return -EBADMSG;
        root = &nodes[0];
        if (root->type != BE_DICT)
                return -EBADMSG;
        /* Only the keys of format 1. */
        k = root + 1;
        for (uint32_t i = 0; i < root->count; i++, k = be_next(k + 1)) {
                bool known = false;
                for (size_t j = 0; j < ELEMENTSOF(keys); j++)
                        known = known || be_str_eq(k, keys[j]);
                if (!known)
                        return -EBADMSG;
        }
        x = be_dict_get_type(root, "fmt", BE_INT);
        if (!x || x->i != 1)
                return -EBADMSG;
        if (copy_str(be_dict_get(root, "id"), t.id, sizeof(t.id)) < 0 || !id_is_valid(t.id))
                return -EBADMSG;
        if (copy_str(be_dict_get(root, "status"), t.status, sizeof(t.status)) < 0 ||
            task_status_from_string(t.status) < 0)
                return -EBADMSG;
        if (be_dict_get(root, "node") && copy_str(be_dict_get(root, "node"), t.node, sizeof(t.node)) < 0)
                return -EBADMSG;
        x = be_dict_get_type(root, "attempt", BE_INT);
        if (!x || x->i < 0)
                return -EBADMSG;
        t.attempt = x->i;
        x = be_dict_get_type(root, "lease_token", BE_INT);
        if (!x || x->i < 0)
                return -EBADMSG;
        t.lease_token = x->i;
        x = be_dict_get_type(root, "updated_at", BE_INT);
        if (!x)
                return -EBADMSG;
        t.updated_at_usec = x->i;
        *ret = t;
        return 0;
}

int task_record_publish(Dht *d, EVP_PKEY *cluster_key, const TaskRecord *t, int64_t seq, unsigned flags,
                        DhtCallback cb, void *userdata) {
        uint8_t v[BEP44_VALUE_MAX];
        char salt[BEP44_SALT_MAX + 1];
        size_t n, salt_len;
        int r;

        r = task_record_salt(t->id, salt, &salt_len);
        if (r < 0)
                return r;
        r = task_record_encode(t, v, sizeof(v), &n);
        if (r < 0)
                return r;
        return dht_put_mutable(d, cluster_key, salt, salt_len, v, n, seq, NULL, flags, cb, userdata);
}

int task_record_target(const uint8_t cluster_pub[BEP44_KEY_SIZE], const char *id, uint8_t ret[DHT_ID_SIZE]) {
        char salt[BEP44_SALT_MAX + 1];
        size_t salt_len;
        int r;

        r = task_record_salt(id, salt, &salt_len);
        if (r < 0)
                return r;
        bep44_mutable_target(cluster_pub, salt, salt_len, ret);
        return 0;
}

typedef struct FetchCtx {
        TaskRecordCallback cb;
        void *userdata;
        uint8_t pub[BEP44_KEY_SIZE];
        char id[TASK_ID_MAX + 1];
} FetchCtx;

static void on_fetched(Dht *d, const DhtResult *res, void *userdata) {
        FetchCtx *c = userdata;
        const DhtItem *it = res->item;
        TaskRecordData rec;
        int r = res->error;

        if (r >= 0) {
                /* The DHT layer verified the signature already; checked again here so that this
                 * function's promise does not depend on another file's. */
                if (!it || !it->is_mutable || memcmp(it->k, c->pub, BEP44_KEY_SIZE) != 0 ||
                    bep44_verify(it->k, it->sig, it->salt, it->salt_len, it->seq, it->v, it->v_len) < 0 ||
                    task_record_decode(it->v, it->v_len, &rec) < 0 || !streq(rec.id, c->id))
                        r = -EBADMSG;
                else
                        rec.seq = it->seq;
        } else if (r == -ENOENT && res->rejected > 0)
                r = -EBADMSG;
        c->cb(r, r >= 0 ? &rec : NULL, res->rejected, c->userdata);
        free(c);
}

int task_record_fetch(Dht *d, const uint8_t cluster_pub[BEP44_KEY_SIZE], const char *id, TaskRecordCallback cb, void *userdata) {
        char salt[BEP44_SALT_MAX + 1];
        size_t salt_len;
        FetchCtx *c;
        int r;

        r = task_record_salt(id, salt, &salt_len);
        if (r < 0)
                return r;
        c = calloc(1, sizeof(FetchCtx));
        if (!c)
                return -ENOMEM;
        c->cb = cb;
        c->userdata = userdata;
        memcpy(c->pub, cluster_pub, BEP44_KEY_SIZE);
        strcpy(c->id, id);
        r = dht_get_mutable(d, cluster_pub, salt, salt_len, on_fetched, c);
        if (r < 0)
                free(c);
        return r;
}
