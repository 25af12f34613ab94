/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The cluster key: an ed25519 key pair that signs what the controls publish in the DHT (task records,
 * see task-record.h). The private half lives in the control's state directory as
 * STATE_DIR/cluster.key, PKCS#8 PEM, mode 0600 (readable by `openssl pkey`); it is generated on first
 * start, written atomically (a temporary file linked into place, so two replicas starting at once on
 * one directory end up with the same key). STATE_DIR/cluster.pub holds the public half in hex for the
 * operator to copy into CLUSTER_KEY= of agents and mc-dhtget. Public keys are given as 64 hex digits
 * or as base64 (43 characters, or 44 with "=" padding) of the 32 raw bytes.
 *
 * Controls find each other and are found by agents under the cluster info-hash:
 * SHA-1("mc-control:" + CLUSTER_NAME). */

#include <openssl/evp.h>

#include "bep44.h"

#define CLUSTER_KEY_FILE "cluster.key"
#define CLUSTER_PUB_FILE "cluster.pub"
#define CLUSTER_KEY_HEX_MAX (BEP44_KEY_SIZE * 2 + 1)

int cluster_key_load_or_generate(const char *state_dir, EVP_PKEY **ret);
/* Loads an ed25519 private key from a PEM file; -ENOENT when missing, -EINVAL when not ed25519. */
int cluster_key_load_file(const char *path, EVP_PKEY **ret);
/* Writes key to path atomically with mode 0600; -EEXIST if path exists (unless replace). */
int cluster_key_write_file(const char *path, EVP_PKEY *key, bool replace);
/* Parses a public key in hex or base64. */
int cluster_key_parse_public(const char *s, uint8_t ret[BEP44_KEY_SIZE]);
int cluster_key_public_hex(EVP_PKEY *key, char ret[CLUSTER_KEY_HEX_MAX]);

void cluster_info_hash(const char *cluster_name, uint8_t ret[DHT_ID_SIZE]);
