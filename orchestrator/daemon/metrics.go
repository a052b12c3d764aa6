package daemon

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the daemon's Prometheus registry (its own, not the global
// one, so tests and embedders never collide). Every value is read at
// scrape time from its owner: the orchestrator for RPOs and markers, the
// store for the journal, the counting devices for iSCSI I/O.
type metrics struct {
	d   *Daemon
	reg *prometheus.Registry
}

var (
	mRPOAge = prometheus.NewDesc("lockstep_service_rpo_age_seconds",
		"Age of the newest application-consistent marker of the service (since protection began when there is none).", []string{"service"}, nil)
	mRPOTarget = prometheus.NewDesc("lockstep_service_rpo_target_seconds",
		"The service's journal-tier RPO.", []string{"service"}, nil)
	mRPOBreach = prometheus.NewDesc("lockstep_service_rpo_breached",
		"1 while the service's RPO is breached.", []string{"service"}, nil)
	mMarkers = prometheus.NewDesc("lockstep_markers_total",
		"Marker runs since the daemon started, by class (app, crash, skipped, failed).", []string{"service", "class"}, nil)
	mMissed = prometheus.NewDesc("lockstep_markers_missed_total",
		"Scheduled marker activations that did not run.", []string{"service"}, nil)
	mMarkerDuration = prometheus.NewDesc("lockstep_marker_duration_seconds",
		"Duration of the service's markers, prepare to record.", []string{"service"}, nil)
	mFreezeWindow = prometheus.NewDesc("lockstep_marker_freeze_window_seconds",
		"How long the service's applications were frozen per marker.", []string{"service"}, nil)
	mLastDuration = prometheus.NewDesc("lockstep_marker_last_duration_seconds",
		"Duration of the service's newest marker.", []string{"service"}, nil)
	mLastFreeze = prometheus.NewDesc("lockstep_marker_last_freeze_window_seconds",
		"Freeze window of the service's newest marker.", []string{"service"}, nil)
	mMarkerTime = prometheus.NewDesc("lockstep_marker_last_timestamp_seconds",
		"Time of the service's newest marker taken by this process.", []string{"service"}, nil)
	mJournalBytes = prometheus.NewDesc("lockstep_journal_bytes",
		"Bytes of journal segments in the data directory.", nil, nil)
	mJournalSegments = prometheus.NewDesc("lockstep_journal_segments",
		"Journal segments in the data directory.", nil, nil)
	mJournalDirect = prometheus.NewDesc("lockstep_journal_direct_write_bytes_total",
		"Journal bytes written to the segments past the page cache.", nil, nil)
	mJournalRead = prometheus.NewDesc("lockstep_journal_read_bytes_total",
		"Journal bytes read for volume reads, by where from: memory (write buffers and the cache of recent writes) or file.", []string{"from"}, nil)
	mJournalCache = prometheus.NewDesc("lockstep_journal_cache_size_bytes",
		"Size of the cache of recent journal writes (--journal-cache).", nil, nil)
	mJournalCacheMem = prometheus.NewDesc("lockstep_journal_cache_memory_bytes",
		"Memory the cache of recent journal writes holds so far.", nil, nil)
	mWindow = prometheus.NewDesc("lockstep_volume_journal_window_seconds",
		"Length of the volume's journal window: any point this far back is restorable.", []string{"volume"}, nil)
	mVolumeSize = prometheus.NewDesc("lockstep_volume_size_bytes",
		"Size of the volume.", []string{"volume"}, nil)
	mIOOps = prometheus.NewDesc("lockstep_iscsi_ops_total",
		"I/O commands initiators sent to the volume's LUN.", []string{"volume", "op"}, nil)
	mIOBytes = prometheus.NewDesc("lockstep_iscsi_bytes_total",
		"Bytes initiators read from or wrote to the volume's LUN.", []string{"volume", "op"}, nil)
	mFolds = prometheus.NewDesc("lockstep_retention_folds_total",
		"Retention folds of the service by outcome (ok, skipped, failed); service \"\" is the volumes of no service.", []string{"service", "outcome"}, nil)
	mFoldBytes = prometheus.NewDesc("lockstep_retention_reclaimed_bytes_total",
		"Journal bytes the service's retention folds removed.", []string{"service"}, nil)
	mFoldTime = prometheus.NewDesc("lockstep_retention_last_fold_timestamp_seconds",
		"Time of the service's last successful retention fold.", []string{"service"}, nil)
	mIOErrors = prometheus.NewDesc("lockstep_iscsi_errors_total",
		"I/O commands on the volume's LUN that failed.", []string{"volume"}, nil)
)

func newMetrics(d *Daemon) *metrics {
	m := &metrics{d: d, reg: prometheus.NewRegistry()}
	m.reg.MustRegister(m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mRPOAge, mRPOTarget, mRPOBreach, mMarkers, mMissed, mMarkerDuration, mFreezeWindow,
		mLastDuration, mLastFreeze, mMarkerTime,
		mJournalBytes, mJournalSegments, mJournalDirect, mJournalRead, mJournalCache, mJournalCacheMem, mWindow, mVolumeSize, mIOOps, mIOBytes, mIOErrors,
		mFolds, mFoldBytes, mFoldTime} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	d := m.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	for _, sm := range d.prot.Metrics().Services {
		gauge(mRPOAge, sm.RPOAge.Seconds(), sm.Service)
		gauge(mRPOTarget, sm.RPOTarget.Seconds(), sm.Service)
		b := 0.0
		if sm.Breached {
			b = 1
		}
		gauge(mRPOBreach, b, sm.Service)
		for _, class := range []string{"app", "crash", "skipped", "failed"} {
			counter(mMarkers, uint64(sm.Markers[class]), sm.Service, class)
		}
		n := uint64(sm.Markers["app"] + sm.Markers["crash"])
		counter(mMissed, uint64(sm.Missed), sm.Service)
		ch <- prometheus.MustNewConstSummary(mMarkerDuration, n, sm.DurationSum.Seconds(), nil, sm.Service)
		ch <- prometheus.MustNewConstSummary(mFreezeWindow, n, sm.FreezeWindowSum.Seconds(), nil, sm.Service)
		if !sm.LastMarker.IsZero() {
			gauge(mLastDuration, sm.LastDuration.Seconds(), sm.Service)
			gauge(mLastFreeze, sm.LastFreeze.Seconds(), sm.Service)
			gauge(mMarkerTime, float64(sm.LastMarker.UnixNano())/1e9, sm.Service)
		}
	}
	js := d.journalStatus()
	gauge(mJournalBytes, float64(js.Bytes))
	gauge(mJournalSegments, float64(js.Segments))
	jst := d.st.Journal().Stats()
	counter(mJournalDirect, uint64(jst.DirectBytes))
	counter(mJournalRead, uint64(jst.ReadMemory), "memory")
	counter(mJournalRead, uint64(jst.ReadFile), "file")
	gauge(mJournalCache, float64(jst.CacheSize))
	gauge(mJournalCacheMem, float64(jst.CacheMemory))
	now := d.clk.Now()
	for _, vi := range d.st.Volumes() {
		gauge(mVolumeSize, float64(vi.Size), vi.Name)
		if vi.FoldThrough > 0 {
			gauge(mWindow, now.Sub(time.Unix(0, vi.FoldThrough)).Seconds(), vi.Name)
		}
	}
	d.folds.mu.Lock()
	for svc, st := range d.folds.stats {
		counter(mFolds, st.ok, svc, "ok")
		counter(mFolds, st.skipped, svc, "skipped")
		counter(mFolds, st.failed, svc, "failed")
		counter(mFoldBytes, uint64(st.bytes), svc)
		if !st.last.IsZero() {
			gauge(mFoldTime, float64(st.last.UnixNano())/1e9, svc)
		}
	}
	d.folds.mu.Unlock()
	d.mu.Lock()
	io := make(map[string]*ioCounters, len(d.io))
	for k, v := range d.io {
		io[k] = v
	}
	d.mu.Unlock()
	for vol, c := range io {
		counter(mIOOps, c.readOps.Load(), vol, "read")
		counter(mIOOps, c.writeOps.Load(), vol, "write")
		counter(mIOOps, c.flushes.Load(), vol, "flush")
		counter(mIOBytes, c.readBytes.Load(), vol, "read")
		counter(mIOBytes, c.writeBytes.Load(), vol, "write")
		counter(mIOErrors, c.errors.Load(), vol)
	}
}
