package daemon

import "syscall"

// DefaultJournalCache is the journal cache a daemon keeps unless told
// otherwise (Config.JournalCache): a sixteenth of the machine's memory,
// between 64 MiB and 4 GiB. It holds the most recently written data of all
// volumes, so that reads of it need not go to the disk: the journal writes
// past the page cache (engine/journal, writeAt).
func DefaultJournalCache() int64 {
	const lo, hi = 64 << 20, 4 << 30
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return lo
	}
	return min(max(int64(si.Totalram)*int64(si.Unit)/16, lo), hi)
}
