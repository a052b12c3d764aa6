package mail

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// queues are Postfix's message queues under queue_directory.
var queues = []string{"maildrop", "incoming", "active", "deferred", "hold", "corrupt"}

// queueState is what the queue directory holds at the cut.
type queueState struct {
	Counts     map[string]int
	Total      int
	NewestID   string
	NewestTime time.Time
}

// readQueue counts the queue files of each queue (hashed subdirectories
// included) and finds the newest queue file. It reads the directory, not
// showq, which is stopped while frozen.
func readQueue(queueDir string) (queueState, error) {
	st := queueState{Counts: map[string]int{}}
	for _, q := range queues {
		root := filepath.Join(queueDir, q)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			st.Counts[q]++
			st.Total++
			if t := info.ModTime(); t.After(st.NewestTime) || (t.Equal(st.NewestTime) && d.Name() > st.NewestID) {
				st.NewestTime, st.NewestID = t, d.Name()
			}
			return nil
		})
		if err != nil {
			return st, err
		}
	}
	return st, nil
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
