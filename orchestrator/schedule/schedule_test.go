package schedule

import (
	"fmt"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/policies/model"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func mustParse(t *testing.T, c model.Consistency) Schedule {
	t.Helper()
	s, err := Parse(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func acts(a []Activation) string {
	s := ""
	for _, x := range a {
		s += x.Service + "@" + x.At.Format("15:04:05") + " "
	}
	return s
}

func misses(m []Miss) string {
	s := ""
	for _, x := range m {
		s += fmt.Sprintf("%s@%s/%s/%d ", x.Service, x.At.Format("15:04:05"), x.Reason, x.Count)
	}
	return s
}

func TestCronOnTime(t *testing.T) {
	clk := clock.NewFake(t0.Add(10 * time.Second))
	s := New()
	s.Set("web", mustParse(t, model.Consistency{Schedule: "*/5 * * * *"}), clk.Now(), time.Time{})
	if n := s.Next("web"); !n.Equal(t0.Add(5 * time.Minute)) {
		t.Fatalf("next %s", n)
	}
	var got string
	for i := 0; i < 30; i++ { // 15 minutes in 30 s steps
		clk.Advance(30 * time.Second)
		due, missed := s.Tick(clk.Now())
		if len(missed) > 0 {
			t.Fatalf("missed %s", misses(missed))
		}
		for _, a := range due {
			s.Done(a.Service)
		}
		got += acts(due)
	}
	if want := "web@12:05:00 web@12:10:00 web@12:15:00 "; got != want {
		t.Fatalf("activations %q, want %q", got, want)
	}
}

func TestEveryAlignsToEpoch(t *testing.T) {
	s := mustParse(t, model.Consistency{Every: 15 * time.Minute})
	if n := s.Next(t0.Add(7 * time.Minute)); !n.Equal(t0.Add(15 * time.Minute)) {
		t.Fatalf("next %s", n)
	}
	if n := s.Next(t0.Add(15 * time.Minute)); !n.Equal(t0.Add(30 * time.Minute)) {
		t.Fatalf("next after an activation %s", n)
	}
}

func TestBusyIsMissed(t *testing.T) {
	clk := clock.NewFake(t0)
	s := New()
	s.Set("db", mustParse(t, model.Consistency{Every: time.Minute}), clk.Now(), time.Time{})
	clk.Advance(time.Minute)
	due, _ := s.Tick(clk.Now())
	if len(due) != 1 {
		t.Fatalf("due %s", acts(due))
	}
	// The run takes longer than the interval: the next activation is missed.
	clk.Advance(time.Minute)
	due, missed := s.Tick(clk.Now())
	if len(due) != 0 || misses(missed) != "db@12:02:00/busy/1 " {
		t.Fatalf("due %q missed %q", acts(due), misses(missed))
	}
	s.Done("db")
	clk.Advance(time.Minute)
	due, missed = s.Tick(clk.Now())
	if acts(due) != "db@12:03:00 " || len(missed) != 0 {
		t.Fatalf("after Done: due %q missed %q", acts(due), misses(missed))
	}
}

func TestStalledTicksCollapse(t *testing.T) {
	clk := clock.NewFake(t0)
	s := New()
	s.Set("db", mustParse(t, model.Consistency{Every: time.Minute}), clk.Now(), time.Time{})
	clk.Advance(10*time.Minute + 5*time.Second) // nothing ticked for ten minutes
	due, missed := s.Tick(clk.Now())
	if acts(due) != "db@12:10:00 " || misses(missed) != "db@12:01:00/not_running/9 " {
		t.Fatalf("due %q missed %q", acts(due), misses(missed))
	}
}

func TestDaemonDownSinceLastRun(t *testing.T) {
	// The catalog says the last scheduled marker was at 11:00; the daemon
	// starts at 12:00:10 with an hourly schedule at :00 and :30.
	now := t0.Add(10 * time.Second)
	s := New()
	s.Set("mail", mustParse(t, model.Consistency{Schedule: "0,30 * * * *"}), now, t0.Add(-time.Hour))
	due, missed := s.Tick(now)
	if acts(due) != "mail@12:00:00 " || misses(missed) != "mail@11:30:00/not_running/1 " {
		t.Fatalf("due %q missed %q", acts(due), misses(missed))
	}
}

func TestLateSingleActivation(t *testing.T) {
	clk := clock.NewFake(t0)
	s := New()
	s.Grace = 10 * time.Second
	s.Set("db", mustParse(t, model.Consistency{Every: time.Hour}), clk.Now(), time.Time{})
	clk.Advance(time.Hour + time.Minute) // found a minute late
	due, missed := s.Tick(clk.Now())
	if acts(due) != "db@13:00:00 " || misses(missed) != "db@13:00:00/not_running/1 " {
		t.Fatalf("due %q missed %q", acts(due), misses(missed))
	}
}

func TestSecondsAndRemove(t *testing.T) {
	clk := clock.NewFake(t0)
	s := New()
	s.Set("fast", mustParse(t, model.Consistency{Schedule: "*/10 * * * * *"}), clk.Now(), time.Time{})
	s.Set("slow", mustParse(t, model.Consistency{Schedule: "@hourly"}), clk.Now(), time.Time{})
	if n := s.NextAny(); !n.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("NextAny %s", n)
	}
	if got := fmt.Sprint(s.Services()); got != "[fast slow]" {
		t.Fatalf("Services %s", got)
	}
	s.Remove("fast")
	clk.Advance(time.Minute)
	if due, _ := s.Tick(clk.Now()); len(due) != 0 {
		t.Fatalf("removed service ran: %s", acts(due))
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []model.Consistency{{}, {Schedule: "not cron"}, {Schedule: "TZ="}} {
		if _, err := Parse(c); err == nil {
			t.Errorf("Parse(%+v) succeeded", c)
		}
	}
	if _, err := Parse(model.Consistency{Schedule: "CRON_TZ=Europe/Berlin 0 3 * * *"}); err != nil {
		t.Errorf("time zone prefix: %v", err)
	}
}
