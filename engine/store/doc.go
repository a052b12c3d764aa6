// Package store is a Lockstep data directory: the journaled volumes of every
// service, their point-in-time views and clones, consistency markers, and the
// retention fold.
//
// # Layout
//
//	DIR/state.json            volumes, fold points, retained markers; replaced atomically
//	DIR/wal/                  the journal (package journal): every write of every volume
//	DIR/volumes/ID/base.img   the volume as of its fold point (sparse)
//	DIR/volumes/ID/snap-*.set blocks needed to read retained markers older than the fold point
//	DIR/volumes/ID/present    clones only: which base blocks are the clone's own
//	DIR/volumes/ID/index/     spill files of the point-in-time index (a cache)
//
// # Reading a block at time T
//
// The journal window of a volume is (F, now], F being its fold point. For T
// inside it, the block's content is that of the newest journal record for the
// block at or before T (found through the index, package index), or, if there
// is none, the base image. For T = K < F, K being a retained marker, the
// content comes from the snapshot sets: set S_i holds, for every block changed
// between retained points K_i and K_(i+1) (K_(n+1) = F), its content at K_i.
// Reading at K_i takes the block from the first of S_i, S_(i+1), ... that holds
// it, else from the base. No read replays the journal or copies the volume.
//
// # Folding
//
// Fold moves F forward: it writes the snapshot sets the new F needs (reading
// the old base and the journal), records the intent in state.json, applies the
// journal records of (F_old, F_new] to the base, syncs it, and commits the new
// F. A crash anywhere in between is finished at the next Open, because
// applying records in order is idempotent and the intent names the sets that
// were already durable. Journal segments are deleted once every record in
// them is folded for its volume.
//
// # Memory
//
// What a Store holds in memory is bounded, whatever the journal's length:
// each volume's index keeps at most Options.IndexMemoryLimit bytes of entries
// (24 bytes per retained block version) and spills the rest to sorted files
// with a small fence per 4 KiB page (package index); the journal buffers at
// most its write-behind size (4 MiB) plus one record; snapshot sets keep 8
// bytes per retained block; the marker table holds the markers retention
// keeps.
//
// # Markers
//
// A marker is one journal record naming every volume of a service. Because
// all volumes share one journal, appending that record is the fence: every
// write acknowledged before Mark was called precedes it in the log, every
// write issued after Mark returns follows it, on every volume alike.
package store
