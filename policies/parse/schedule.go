package parse

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// cronParser accepts the standard five fields, an optional leading seconds
// field, descriptors (@hourly, @every 5m) and a CRON_TZ= prefix.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// parseCron parses a cron expression. The recover guards against inputs the
// cron parser does not expect (it indexes a TZ= prefix without a space).
func parseCron(expr string) (s cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%q is not a cron expression", expr)
		}
	}()
	if (strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=")) && !strings.Contains(expr, " ") {
		return nil, fmt.Errorf("%q: a time zone prefix must be followed by a space and the schedule", expr)
	}
	return cronParser.Parse(expr)
}

// gapSpan is the representative period over which a calendar schedule's gaps
// are measured: five years from a fixed date, so that leap days and the
// days of the week are covered.
const gapSpan = 5 * 366 * 24 * time.Hour

var gapStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

var errNeverFires = errors.New("the schedule never fires, or fires less than twice in five years")

// maxGap returns the longest interval between two consecutive activations
// of s. A calendar schedule repeats the same times of day on every day it
// matches, so the gap is the larger of the widest gap within a day and the
// widest gap from the last time of one matching day to the first of the
// next; that needs one step per matching day instead of one per activation.
func maxGap(s cron.Schedule) (time.Duration, error) {
	switch s := s.(type) {
	case cron.ConstantDelaySchedule:
		return s.Delay, nil
	case *cron.SpecSchedule:
		return specMaxGap(s)
	default:
		return 0, fmt.Errorf("unsupported schedule type %T", s)
	}
}

func specMaxGap(s *cron.SpecSchedule) (time.Duration, error) {
	// Seconds of the day at which the schedule fires on a matching day.
	first, last, prev := -1, -1, -1
	var intra time.Duration
	for h := 0; h < 24; h++ {
		if s.Hour&(1<<uint(h)) == 0 {
			continue
		}
		for m := 0; m < 60; m++ {
			if s.Minute&(1<<uint(m)) == 0 {
				continue
			}
			for sec := 0; sec < 60; sec++ {
				if s.Second&(1<<uint(sec)) == 0 {
					continue
				}
				t := h*3600 + m*60 + sec
				if first < 0 {
					first = t
				}
				if prev >= 0 {
					intra = max(intra, time.Duration(t-prev)*time.Second)
				}
				prev, last = t, t
			}
		}
	}
	if first < 0 {
		return 0, errNeverFires
	}

	days := *s
	days.Second, days.Minute, days.Hour = 1, 1, 1 // midnight of each matching day
	loc := s.Location
	if loc == nil || loc == time.Local {
		loc = time.UTC
	}
	start := gapStart.In(loc)
	d := days.Next(start.Add(-time.Second))
	if d.IsZero() {
		return 0, errNeverFires
	}
	end := start.Add(gapSpan)
	inter := time.Duration(0)
	for steps := 0; d.Before(end) && steps < 4000; steps++ {
		next := days.Next(d)
		if next.IsZero() {
			break
		}
		gap := next.Sub(d) - time.Duration(last-first)*time.Second
		inter = max(inter, gap)
		d = next
	}
	if inter == 0 {
		// One matching day in the whole span (a February 29th more than
		// five years on): the schedule is as good as never.
		return 0, errNeverFires
	}
	return max(intra, inter), nil
}
