package index

import "time"

// quiesce waits until no background merge is due or running, so that tests
// can look at files and the heap without a merge in flight.
func (x *Index) quiesce() {
	for {
		x.merge.kick()
		x.wmu.Lock()
		idle := x.closed || !x.merge.running && x.pickSpilledPair() < 0
		x.wmu.Unlock()
		if idle {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
