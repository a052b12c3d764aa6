package sdk

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/stats"
)

// fake records calls; Freeze blocks until release is closed when hang is set.
type fake struct {
	mu      sync.Mutex
	thaws   int
	hang    chan struct{}
	freezeE error
	ev      Evidence
}

func (f *fake) Info(context.Context) (Info, error)           { return Info{Name: "fake"}, nil }
func (f *fake) ConfigSchema(context.Context) (Schema, error) { return Schema{}, nil }
func (f *fake) Validate(context.Context, App) (Diagnostics, error) {
	return nil, nil
}
func (f *fake) Prepare(context.Context, App) error { return nil }
func (f *fake) Freeze(ctx context.Context, _ App, _ time.Duration) (Evidence, error) {
	if f.hang != nil {
		<-f.hang
	}
	return f.ev, f.freezeE
}
func (f *fake) Thaw(context.Context, App) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.thaws++
	return nil
}
func (f *fake) Health(context.Context, App) (Health, error) { return Health{OK: true}, nil }
func (f *fake) Stop(context.Context, App) error             { return nil }
func (f *fake) Start(context.Context, App) error            { return nil }

func (f *fake) thawCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.thaws
}

func quiet(string, ...any) {}

func waitThaws(t *testing.T, f *fake, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for f.thawCount() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d thaws after %s, want %d", f.thawCount(), d, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var testApp = App{Service: "s", Name: "a"}

func TestWatchdogHoldElapses(t *testing.T) {
	f := &fake{}
	w := newWatchdog(f, quiet)
	start := time.Now()
	if _, err := w.freeze(context.Background(), testApp, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitThaws(t, f, 1, 2*time.Second)
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("thawed after %s, before the hold", el)
	}
	if w.frozen() != 0 {
		t.Fatal("still held")
	}
}

func TestWatchdogThawDisarms(t *testing.T) {
	f := &fake{}
	w := newWatchdog(f, quiet)
	if _, err := w.freeze(context.Background(), testApp, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := w.thaw(context.Background(), testApp); err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond)
	if n := f.thawCount(); n != 1 {
		t.Fatalf("%d thaws, want only the host's", n)
	}
}

func TestWatchdogHangingFreeze(t *testing.T) {
	f := &fake{hang: make(chan struct{})}
	w := newWatchdog(f, quiet)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	done := make(chan error)
	go func() { _, err := w.freeze(ctx, testApp, 100*time.Millisecond); done <- err }()
	// Thawed at hold although Freeze has not returned.
	waitThaws(t, f, 1, 2*time.Second)
	close(f.hang)
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("late freeze: %v", err)
	}
}

func TestWatchdogLateFreezeThawed(t *testing.T) {
	// A Freeze that succeeds after the host gave up is thawed at once,
	// not at hold.
	f := &fake{hang: make(chan struct{})}
	w := newWatchdog(f, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := w.freeze(ctx, testApp, time.Hour); done <- err }()
	cancel()
	close(f.hang)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if f.thawCount() != 1 || w.frozen() != 0 {
		t.Fatalf("thaws %d, held %d", f.thawCount(), w.frozen())
	}
}

func TestWatchdogFreezeErrorThaws(t *testing.T) {
	f := &fake{freezeE: errors.New("boom")}
	w := newWatchdog(f, quiet)
	if _, err := w.freeze(context.Background(), testApp, time.Hour); err == nil {
		t.Fatal("no error")
	}
	if f.thawCount() != 1 {
		t.Fatalf("%d thaws", f.thawCount())
	}
}

func TestWatchdogEvidenceTooLarge(t *testing.T) {
	f := &fake{ev: Evidence{"x": strings.Repeat("y", MaxEvidence)}}
	w := newWatchdog(f, quiet)
	if _, err := w.freeze(context.Background(), testApp, time.Hour); !errors.Is(err, ErrEvidenceTooLarge) {
		t.Fatalf("got %v", err)
	}
	if f.thawCount() != 1 {
		t.Fatalf("%d thaws", f.thawCount())
	}
}

func TestWatchdogConnectionClosed(t *testing.T) {
	f := &fake{}
	w := newWatchdog(f, quiet)
	ctx := context.Background()
	w.HandleConn(ctx, &stats.ConnBegin{})
	if _, err := w.freeze(ctx, testApp, time.Hour); err != nil {
		t.Fatal(err)
	}
	w.HandleConn(ctx, &stats.ConnEnd{})
	if f.thawCount() != 1 || w.frozen() != 0 {
		t.Fatalf("thaws %d, held %d", f.thawCount(), w.frozen())
	}
}

func TestConfigRoundTrip(t *testing.T) {
	in := App{Service: "s", Name: "a", Volumes: []string{"v"}, Config: Config{
		"s": "x", "l": []string{"a", "b"}, "d": 3 * time.Second, "n": int64(-7), "b": true,
	}}
	p, err := appToProto(in)
	if err != nil {
		t.Fatal(err)
	}
	if out := appFromProto(p); !reflect.DeepEqual(in, out) {
		t.Fatalf("got %#v", out)
	}
	if _, err := appToProto(App{Config: Config{"f": 1.5}}); err == nil {
		t.Fatal("float accepted")
	}
}

func TestErrorsCrossTheWire(t *testing.T) {
	for _, sentinel := range []error{ErrUnsupported, ErrEvidenceTooLarge, context.DeadlineExceeded} {
		err := fromStatus(toStatus(sentinel))
		if !errors.Is(err, sentinel) {
			t.Errorf("%v became %v", sentinel, err)
		}
	}
}

func TestWatchParent(t *testing.T) {
	f := &fake{}
	w := newWatchdog(f, quiet)
	if _, err := w.freeze(context.Background(), testApp, time.Hour); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ppid := 4242
	getppid := func() int { mu.Lock(); defer mu.Unlock(); return ppid }
	exited := make(chan struct{})
	go watchParent(w, time.Millisecond, getppid, func() { close(exited) })
	time.Sleep(20 * time.Millisecond)
	if f.thawCount() != 0 {
		t.Fatal("thawed while the parent lives")
	}
	mu.Lock()
	ppid = 1 // re-parented to init: the host is gone
	mu.Unlock()
	select {
	case <-exited:
	case <-time.After(2 * time.Second):
		t.Fatal("no exit after the parent changed")
	}
	if f.thawCount() != 1 {
		t.Fatalf("%d thaws before exit", f.thawCount())
	}
}

func TestHostRefusesLargeEvidence(t *testing.T) {
	// What a plugin not built with this SDK might send.
	big := []byte(`{"x":"` + strings.Repeat("y", MaxEvidence) + `"}`)
	if _, err := decodeEvidence(big); !errors.Is(err, ErrEvidenceTooLarge) {
		t.Fatalf("got %v", err)
	}
	if ev, err := decodeEvidence([]byte(`{"lsn":"0/16B3748","timeline":1}`)); err != nil || ev["timeline"] != float64(1) {
		t.Fatalf("got %v %v", ev, err)
	}
}
