-- mc schema, version 2: contents, the files tasks take as inputs (docs/api.md, "Contents").
--
-- A content is registered by its manifest, a BitTorrent v2 .torrent of one file that mc-control has
-- checked (canonical, SHA-256 of info = id, piece layer hashing to the pieces root) before storing it
-- re-encoded, so that one content has one stored form. Who seeds it is not stored here: the DHT finds
-- the seeders. Contents are never deleted, which is what lets a push check its inputs against this
-- table without locking the rows it found: a content known at push time stays known.

CREATE TABLE contents (
        seq          bigserial   NOT NULL UNIQUE,             -- insertion order; the list cursor
        id           text        PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),
        torrent      bytea       NOT NULL,                    -- the canonical .torrent {info, piece layers}
        name         text        NOT NULL,                    -- the info's name: hex of the pieces root
        length       bigint      NOT NULL CHECK (length >= 0),
        piece_length integer     NOT NULL CHECK (piece_length > 0),
        pieces       integer     NOT NULL CHECK (pieces >= 0),
        created_at   timestamptz NOT NULL DEFAULT now(),
        created_by   text                                     -- the user who registered it (NULL without auth)
);
