/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A PeerSink over the seeder's io_uring block sender (src/seeder/block-sender.h): the connections'
 * piece messages leave by send-zc, splice or sendfile, whichever the sender chose, without the data
 * passing through user memory. Built as its own library (libmcpeersink_uring) so that only the
 * programs that want it link liburing.
 *
 *     block_sender_new(event, &(BlockSenderConfig) { .path = BLOCK_SEND_AUTO }, &sender);
 *     peer_sink_block_sender_new(sender, &sink);          then give sink to SwarmServer / Swarm
 *     ...
 *     swarm_server_free(srv); peer_sink_free(sink); block_sender_free(sender);
 *
 * The sink borrows the sender (free the sink first, after every connection using it). A file handle
 * is a BlockFile over a duplicate of the store's descriptor, one per file (device and inode) shared by
 * every connection serving it, so that the send-zc path maps a content once however many peers
 * fetch it; the sender's callbacks are passed on. */

#include "block-sender.h"
#include "peer-sink.h"

int peer_sink_block_sender_new(BlockSender *sender, PeerSink **ret);
