package index

import (
	"errors"
	"sync/atomic"
)

// merger merges spill files in the background. A merge of two spill files
// costs time in proportion to their size, without bound as the journal
// window grows, so it must not run inside Add: Add spills (work bounded by
// MemoryLimit) and kicks the merger. The merger reads its inputs without
// any lock (it holds references on their files) and publishes under wmu,
// discarding its output if DropThrough replaced an input meanwhile.
type merger struct {
	x        *Index
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	stopping atomic.Bool
	running  bool // a merge is in flight; under x.wmu
}

var errMergeStopped = errors.New("index: merge stopped by Close")

func (m *merger) start(x *Index) {
	m.x = x
	m.wake = make(chan struct{}, 1)
	m.quit = make(chan struct{})
	m.done = make(chan struct{})
	go m.loop()
}

func (m *merger) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *merger) stop() {
	m.stopping.Store(true)
	close(m.quit)
	<-m.done
}

func (m *merger) loop() {
	defer close(m.done)
	for {
		select {
		case <-m.quit:
			return
		case <-m.wake:
		}
		for m.once() {
		}
	}
}

// pick returns the newest adjacent pair of spill files whose newer one has
// caught up with the older one (binomial merging), or -1.
func (x *Index) pickSpilledPair() int {
	for i := x.firstMem() - 2; i >= 0; i-- {
		if x.runs[i].n <= x.runs[i+1].n {
			return i
		}
	}
	return -1
}

// once runs one merge; it reports whether to look for another.
func (m *merger) once() bool {
	x := m.x
	x.wmu.Lock()
	i := -1
	if !x.closed {
		i = x.pickSpilledPair()
	}
	if i < 0 {
		x.wmu.Unlock()
		return false
	}
	a, b := x.runs[i], x.runs[i+1]
	a.file.acquire()
	b.file.acquire()
	dropped := x.dropped
	m.running = true
	x.wmu.Unlock()

	r, err := m.mergeFiles(a, b, dropped)

	x.wmu.Lock()
	defer x.wmu.Unlock()
	m.running = false
	a.file.release()
	b.file.release()
	if err != nil {
		if !errors.Is(err, errMergeStopped) {
			x.bgErr = err
		}
		return false
	}
	j := -1
	for k := 0; k+1 < len(x.runs); k++ {
		if x.runs[k] == a && x.runs[k+1] == b {
			j = k
			break
		}
	}
	if x.closed || j < 0 {
		// Close or DropThrough got there first.
		if r != nil {
			r.file.release()
		}
		return !x.closed
	}
	if err := x.replace(j, j+2, r); err != nil {
		x.bgErr = err
		return false
	}
	x.bgErr = nil
	x.trimFilters()
	return true
}

func (m *merger) mergeFiles(a, b *run, dropped int64) (*run, error) {
	x := m.x
	w, err := x.newSpillWriter()
	if err != nil {
		return nil, err
	}
	filter := newBloom(a.n + b.n)
	count := 0
	_, err = merge(a.iter(), b.iter(), dropped, func(e Entry) {
		w.add(e)
		filter.add(e.Block)
		count++
		if count%(chunkPages*perPage) == 0 && m.stopping.Load() && w.err == nil {
			w.err = errMergeStopped
		}
	})
	if err == nil && w.err != nil {
		err = w.err
	}
	if err != nil {
		w.abort()
		return nil, err
	}
	s, err := w.finish()
	if err != nil || s == nil {
		return nil, err
	}
	r := &run{minTS: max(a.minTS, dropped+1), maxTS: b.maxTS, n: s.n, file: s,
		parts: mergedParts(a, b, dropped, a.n+b.n-s.n, s.n)}
	r.filter.Store(filter)
	return r, nil
}
