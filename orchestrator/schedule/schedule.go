// Package schedule decides when each service's markers are due, from its
// cron schedule or fixed interval, on an injected clock. It does not run
// anything itself: Tick says what is due and what was missed, and the caller
// runs the markers and reports back with Done. cron's own runner is not used
// because it reads the wall clock.
//
// A missed activation is one that did not run at its time: the runner for the
// service was still busy with the previous marker, or the daemon was not
// running (or was stalled) when it fell due. Several activations that fell
// due while nothing ran collapse into one run now, and the others are
// reported as missed.
package schedule

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/lockstep-io/lockstep/policies/model"
)

// Parser is the cron dialect of policies (the same as policies/parse).
var Parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Miss reasons.
const (
	ReasonBusy = "busy"        // the previous marker of the service was still running
	ReasonLate = "not_running" // the daemon was down or stalled at the activation
	ReasonHeld = "held"        // markers of the service were held (a restore)
)

// DefaultGrace is how late an activation may start and still count as run
// on time.
const DefaultGrace = 30 * time.Second

// Activation is one due run of a service's marker.
type Activation struct {
	Service string
	At      time.Time // the scheduled time
}

// Miss is one activation that did not run.
type Miss struct {
	Service string
	At      time.Time // the scheduled time
	Reason  string    // ReasonBusy, ReasonLate or ReasonHeld
	Count   int       // activations collapsed into this miss (>= 1)
}

// Schedule is when a service's markers fall due.
type Schedule interface {
	// Next returns the first activation strictly after t.
	Next(t time.Time) time.Time
}

// Parse returns the schedule of c (cron expression or fixed interval).
func Parse(c model.Consistency) (Schedule, error) {
	if c.Every > 0 {
		return every(c.Every), nil
	}
	if strings.TrimSpace(c.Schedule) == "" {
		return nil, fmt.Errorf("schedule: neither schedule nor every is set")
	}
	s, err := parseCron(c.Schedule)
	if err != nil {
		return nil, fmt.Errorf("schedule: %w", err)
	}
	return s, nil
}

func parseCron(expr string) (s cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%q is not a cron expression", expr)
		}
	}()
	return Parser.Parse(expr)
}

// every fires at multiples of d since the Unix epoch, so activations do not
// drift with restarts.
type every time.Duration

func (e every) Next(t time.Time) time.Time {
	d := time.Duration(e)
	n := t.Truncate(d)
	if !n.After(t) {
		n = n.Add(d)
	}
	return n
}

type entry struct {
	sched Schedule
	next  time.Time
	busy  bool
}

// Scheduler tracks the next activation of every service. It is safe for
// concurrent use.
type Scheduler struct {
	// Grace is how late an activation may be found and still run on time
	// (DefaultGrace when zero).
	Grace time.Duration

	mu      sync.Mutex
	entries map[string]*entry
}

// New returns an empty Scheduler.
func New() *Scheduler { return &Scheduler{entries: map[string]*entry{}} }

// Set schedules service from now on, keeping its busy state. lastRun, when
// not zero, is the time of the service's last marker (from the catalog): the
// activations between it and now are reported as missed by the next Tick,
// since the daemon was not running them.
func (s *Scheduler) Set(service string, sched Schedule, now, lastRun time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[service]
	if e == nil {
		e = &entry{}
		s.entries[service] = e
	}
	e.sched = sched
	from := now
	if !lastRun.IsZero() && lastRun.Before(now) {
		from = lastRun
	}
	e.next = sched.Next(from)
}

// Remove stops scheduling service.
func (s *Scheduler) Remove(service string) {
	s.mu.Lock()
	delete(s.entries, service)
	s.mu.Unlock()
}

// Services lists the scheduled services.
func (s *Scheduler) Services() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.entries))
	for n := range s.entries {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Next returns the next activation of service, or the zero time.
func (s *Scheduler) Next(service string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[service]; e != nil {
		return e.next
	}
	return time.Time{}
}

// NextAny returns the earliest next activation of all services, or the
// zero time when none is scheduled.
func (s *Scheduler) NextAny() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n time.Time
	for _, e := range s.entries {
		if n.IsZero() || e.next.Before(n) {
			n = e.next
		}
	}
	return n
}

// Tick returns the activations due at now and the activations missed since
// the last Tick. Each returned activation marks its service busy until Done;
// an activation that falls due while its service is busy is missed.
func (s *Scheduler) Tick(now time.Time) ([]Activation, []Miss) {
	grace := s.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.entries))
	for n := range s.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var due []Activation
	var missed []Miss
	for _, name := range names {
		e := s.entries[name]
		if e.next.IsZero() || e.next.After(now) {
			continue
		}
		// Every activation in [e.next, now]; the newest one runs (or is
		// missed when busy), the older ones were missed.
		var acts []time.Time
		for t := e.next; !t.IsZero() && !t.After(now); t = e.sched.Next(t) {
			acts = append(acts, t)
			if len(acts) > 1<<16 {
				// A schedule every second over a long outage: count no
				// further (the miss's Count is then a lower bound) and
				// run the newest one counted.
				break
			}
		}
		last := acts[len(acts)-1]
		e.next = e.sched.Next(now)
		older := acts[:len(acts)-1]
		// The newest activation is itself late when found past grace.
		lateLast := now.Sub(last) > grace
		if len(older) > 0 {
			reason := ReasonLate
			if e.busy {
				reason = ReasonBusy
			}
			missed = append(missed, Miss{Service: name, At: older[0], Reason: reason, Count: len(older)})
		}
		switch {
		case e.busy:
			missed = append(missed, Miss{Service: name, At: last, Reason: ReasonBusy, Count: 1})
		default:
			if lateLast && len(older) == 0 {
				// Run it anyway (a late marker beats none), but say it
				// was late.
				missed = append(missed, Miss{Service: name, At: last, Reason: ReasonLate, Count: 1})
			}
			e.busy = true
			due = append(due, Activation{Service: name, At: last})
		}
	}
	return due, missed
}

// Done marks service's run as finished, so its next activation may run.
func (s *Scheduler) Done(service string) {
	s.mu.Lock()
	if e := s.entries[service]; e != nil {
		e.busy = false
	}
	s.mu.Unlock()
}
