// Package journal is the write-ahead log of a Lockstep data directory: every
// write, unmap and consistency marker of every volume, in one total order.
//
// One log per data directory (not one per volume) is what gives write-order
// fidelity across volumes: a record's sequence number orders it against every
// other volume's records, so any prefix of the log is a state the service's
// hosts could have observed, and a marker record is one position in every
// volume's history at once.
//
// # Segments
//
// The log is a series of segment files in one directory, named by a 16-digit
// hexadecimal segment number ("0000000000000001.wal"). A segment starts with a
// 64-byte header:
//
//	0  8  magic "LSJSEG01"
//	8  4  format version (1), little endian
//	12 4  reserved (0)
//	16 8  segment number
//	24 8  sequence number of the first record in the segment
//	32 4  CRC32C of bytes 0..32
//	36 4  reserved (0)
//	40 8  synced-through: an offset below which every record is known durable
//	48 4  CRC32C of bytes 40..48
//	52 12 reserved (0)
//
// Records follow back to back from offset 64. A new segment is cut when the
// current one would exceed the segment size: the current segment is written
// and truncated to its last record (sealed), then the new one is written to
// a temporary name, preallocated, fsynced, renamed and its directory
// fsynced. A seal does not fsync: the next sync fsyncs every sealed segment
// not yet durable, oldest first, and sets its synced-through to its end,
// before the newest segment. So a torn tail can end a sealed segment only if
// no later segment records a sync (its synced-through is still 64), and then
// nothing after it was ever acknowledged.
//
// The newest segment is preallocated (fallocate) to the segment size where
// the file system allows, so that a flush's fdatasync has no file size or
// block allocation to commit, and a sync that carries little data first
// writes zeros over the next MiB ahead of the records (zeroAhead), so that
// later small syncs find their blocks already written rather than unwritten
// extents to convert. The bytes past its last record read as zeros either
// way; an all-zero remainder of a segment at or past its synced-through
// offset is the end of the log, not a record and not damage (a frame is
// never all zeros: its body length is at least 40). Close truncates the
// newest segment to its last record, so a cleanly closed log holds exactly
// its records.
//
// The synced-through field is rewritten in place after an fsync with the
// offset that fsync covered (at most once per MiB of progress or per second,
// so that a lone writer's fsyncs don't each rewrite the header page too),
// without an fsync of its own: the next fsync makes it durable. After a power loss it is therefore never larger than what was
// really durable, which is what lets Open tell a torn tail (damage at or past
// synced-through: the write never completed, truncate it) from corruption of
// acknowledged data (damage below it: refuse and report).
//
// # Records
//
// Every record is framed as
//
//	0 4  body length L, little endian (0 < L <= MaxRecordBody)
//	4 4  CRC32C (Castagnoli) of the body
//	8 L  body
//
// and every body starts with a 40-byte header:
//
//	0  1  type: 1 write, 2 zero (WRITE SAME of zeros), 3 unmap, 4 marker
//	1  1  flags (0)
//	2  2  reserved (0)
//	4  4  volume id (0 for markers)
//	8  8  sequence number: dense, +1 per record across the whole log
//	16 8  timestamp, Unix nanoseconds; strictly increasing with sequence,
//	      also across restarts and when the wall clock steps back
//	24 8  byte offset in the volume (write, zero, unmap)
//	32 4  byte length in the volume (write, zero, unmap)
//	36 4  reserved (0)
//
// A write's body continues with its data (length bytes). A marker's body
// continues with: uvarint-prefixed ID, service and class strings, a uvarint
// count of volume ids each as a uvarint, and uvarint-prefixed evidence bytes.
//
// # Writing and reading
//
// Appends go to a buffer; a sync, or write-behind once WriteBehind bytes
// are buffered, hands it to the newest segment. The whole pages in the
// middle of a large hand-off are written past the page cache (O_DIRECT, see
// vfs.DirectIO; the buffer's memory is laid out so that they can be written
// from where they lie), the partial pages at its ends through it. An
// append-only file would otherwise take a fresh page-cache page for every
// byte ever written, which on a VM whose free memory is reported to the host
// is a host fault per page. The newest Options.Cache bytes handed to the
// files are also kept in a ring that ReadData checks before the files
// (tailcache.go). Neither changes the format or what is durable when.
//
// # Torn tails and damage
//
// Open scans every segment record by record. The first record whose frame is
// incomplete, whose length is out of range or whose CRC does not match ends
// the valid log. If it lies at or beyond the segment's synced-through and no
// later segment records a sync, the bytes from there on are copied to
// "torn/" beside the segments, the segment is truncated, and any later
// segments are moved to "torn/" whole: writes that never completed and were
// never acknowledged. (A sealed segment whose unsynced tail was lost whole
// reads as zeros; the next segment then does not continue its sequence, and
// is set aside the same way.) Damage below synced-through, damage before a
// segment that records a sync, or a sequence gap anywhere else is corruption:
// Open fails with ErrCorrupt naming the segment and offset; Verify lists all
// damage and Repair fixes only what it can fix without discarding durable
// records. Sealed segments found not synced to their end are fsynced by Open.
package journal
