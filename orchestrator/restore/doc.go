// Package restore brings a whole service back to one point in time: it
// chooses the point (a marker, or an exact time), plans what will change,
// and executes in place (stop apps, fence and roll every volume, start,
// check health), as new copy-on-write volumes, or for a single volume.
//
// Every in-place restore keeps a durable record, DIR/ID.json, replaced
// atomically after every step. It holds the undo point (the journal's time
// just before the first volume was rolled), which apps were stopped, which
// volumes were rolled and which apps were started, so that a restore that
// failed or whose process died can be resumed (Resume) or undone (Undo).
// Rolling a volume again to the same point is idempotent, which is what
// makes resuming after a crash in the middle of a roll safe.
package restore
