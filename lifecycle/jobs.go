package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

// ErrBusy means a job of that kind is already running.
var ErrBusy = errors.New("a job of this kind is already running")

// Jobs runs retention, garbage collection and upload purging on intervals, with log
// lines and counters; the same jobs run on demand. A job does not run twice at once,
// on any of the instances sharing the index: one collection, one purge, and one run
// of each retention policy at a time (each job is a lock of the index's); a run that
// finds its job busy is skipped, and says so in the log.
//
// The schedule is the cluster's too: every instance looks at each job a few times per
// interval and runs it when its last run (kept in the index) is an interval old. When
// the instance running a job dies, its lock goes with it and another instance runs the
// job on its next look.
type Jobs struct {
	Engine *Engine
	Store  interface {
		CollectGarbage(ctx context.Context, opts cache.GCOptions) (cache.GCReport, error)
		PurgeUploads(ctx context.Context, maxAge time.Duration) (int, error)
		EvictCache(ctx context.Context, reg string, maxBytes int64, pulledWithin time.Duration) (cache.EvictReport, error)
		TryLock(ctx context.Context, key string) (held context.Context, unlock func(), ok bool, err error)
		JobRecords() cache.RecordTable
	}
	// Evictions trim proxy caches before each collection.
	Evictions     []Eviction
	GCInterval    time.Duration
	GCGrace       time.Duration
	PurgeInterval time.Duration
	PurgeAfter    time.Duration
	// RetentionEvery runs each policy (by name) on its own interval.
	RetentionEvery map[string]time.Duration
	Log            *slog.Logger

	running sync.WaitGroup
	started time.Time
	// counters are shared with the jobs this replaced (a reload): see Counters.
	countersOnce sync.Once
	c            *Counters
}

// Counters count what the jobs did since the process started (exported as metrics).
type Counters struct {
	GCRuns, BlobsCollected, ManifestsCollected, UploadsPurged, RetentionRuns, TagsDeleted atomic.Int64
	PurgeRuns, EvictionRuns, ManifestsEvicted, BytesEvicted                               atomic.Int64
	// Time spent in each kind of job, in nanoseconds.
	GCNanos, PurgeNanos, RetentionNanos, EvictionNanos atomic.Int64
}

// Counters returns the jobs' counters.
func (j *Jobs) Counters() *Counters {
	j.countersOnce.Do(func() {
		if j.c == nil {
			j.c = &Counters{}
		}
	})
	return j.c
}

// Inherit takes over from the jobs j replaces (a configuration reload): their
// counters, shared (a run still finishing on old counts here too), and their start
// time, so that a job never run is due an interval after the process started, not
// after the last reload.
func (j *Jobs) Inherit(old *Jobs) {
	j.c = old.Counters()
	j.started = old.started
}

// timed adds the time since start to a job's total.
func timed(total *atomic.Int64, start time.Time) { total.Add(int64(time.Since(start))) }

// Start runs the scheduled jobs until ctx ends.
func (j *Jobs) Start(ctx context.Context) {
	if j.started.IsZero() { // not taken over from the jobs this replaced
		j.started = time.Now()
	}
	every := func(d time.Duration, job string, run func(due func() bool)) {
		if d <= 0 {
			return
		}
		due := func() bool { return j.due(job, d) }
		j.running.Add(1)
		go func() {
			defer j.running.Done()
			t := time.NewTicker(max(d/looksPerInterval, time.Millisecond))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if due() {
						run(due)
					}
				}
			}
		}()
	}
	every(j.GCInterval, gcJob, func(due func() bool) { j.gc(ctx, false, due) })
	every(j.PurgeInterval, purgeJob, func(due func() bool) { j.purge(ctx, due) })
	for name, d := range j.RetentionEvery {
		every(d, retentionJob(name), func(due func() bool) { j.retention(ctx, name, due) })
	}
}

// looksPerInterval is how often per interval each instance looks whether a job is due:
// a job runs every interval to interval×(1+1/looksPerInterval).
const looksPerInterval = 4

// The jobs' names: their locks and their records of last runs.
const (
	gcJob    = "job/gc"
	purgeJob = "job/purge"
)

func retentionJob(policy string) string { return "job/retention/" + policy }

// due reports whether job last finished (on any instance) an interval or more ago.
func (j *Jobs) due(job string, interval time.Duration) bool {
	v, ok, err := j.Store.JobRecords().Get(job)
	if err != nil {
		j.Log.Warn("job schedule unreadable", "job", job, "err", err)
		return false
	}
	last := j.started // never ran: an interval after start, as a plain ticker would
	if ok {
		last.UnmarshalText(v)
	}
	return time.Since(last) >= interval
}

// take takes job's lock, then checks (under it) that the job is still due; an error
// when the job runs elsewhere or ran meanwhile. The job runs under jobCtx, which ends
// if the lock is lost (another instance may start the job then); release records the
// run's end when it completed (done): a run cut short (a reload, a lost lock, an
// error) or a dry run leaves the job due, to be run at the next look.
func (j *Jobs) take(ctx context.Context, job string, due func() bool, attrs ...any) (jobCtx context.Context, release func(done bool), err error) {
	held, unlock, ok, err := j.Store.TryLock(ctx, job)
	if err != nil {
		j.Log.Warn("job not started: its lock is unavailable", append([]any{"job", job, "err", err}, attrs...)...)
		return nil, nil, err
	}
	if !ok {
		return nil, nil, j.busy(job, attrs...)
	}
	if due != nil && !due() {
		unlock()
		return nil, nil, errNotDue
	}
	jobCtx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(held, cancel)
	return jobCtx, func(done bool) {
		stop()
		cancel()
		defer unlock()
		if !done {
			return
		}
		now, _ := time.Now().MarshalText()
		if err := j.Store.JobRecords().Put(job, now); err != nil {
			j.Log.Warn("job run not recorded", append([]any{"job", job, "err", err}, attrs...)...)
		}
	}, nil
}

// errNotDue: another instance ran the job while this one was about to.
var errNotDue = errors.New("the job ran elsewhere meanwhile")

// busy logs a run skipped because the same job is still running.
func (j *Jobs) busy(job string, attrs ...any) error {
	j.Log.Warn("job skipped: the previous run is still going", append([]any{"job", job}, attrs...)...)
	return ErrBusy
}

// Eviction is the cache limit of one proxy registry.
type Eviction struct {
	Registry     string
	MaxBytes     int64
	PulledWithin time.Duration
}

// Wait returns once the scheduled jobs have stopped (after Start's context ended),
// so the store is not closed under a running job.
func (j *Jobs) Wait() { j.running.Wait() }

// GC trims proxy caches, then collects garbage now.
func (j *Jobs) GC(ctx context.Context, dryRun bool) (cache.GCReport, error) {
	return j.gc(ctx, dryRun, nil)
}

func (j *Jobs) gc(ctx context.Context, dryRun bool, due func() bool) (r cache.GCReport, err error) {
	ctx, release, err := j.take(ctx, gcJob, due)
	if err != nil {
		return cache.GCReport{}, err
	}
	defer func() { release(!dryRun && err == nil) }()
	start := time.Now()
	for _, e := range j.Evictions {
		if dryRun {
			break
		}
		evictStart := time.Now()
		r, err := j.Store.EvictCache(ctx, e.Registry, e.MaxBytes, e.PulledWithin)
		timed(&j.Counters().EvictionNanos, evictStart)
		j.Counters().EvictionRuns.Add(1)
		j.Counters().ManifestsEvicted.Add(int64(r.Manifests))
		j.Counters().BytesEvicted.Add(r.Bytes)
		j.Log.Info("proxy cache eviction", "registry", e.Registry, "manifests", r.Manifests, "bytes", r.Bytes, "err", err)
		if err != nil {
			return cache.GCReport{}, err
		}
	}
	gcStart := time.Now()
	r, err = j.Store.CollectGarbage(ctx, cache.GCOptions{Grace: j.GCGrace, DryRun: dryRun})
	timed(&j.Counters().GCNanos, gcStart)
	if !dryRun {
		j.Counters().GCRuns.Add(1)
		j.Counters().BlobsCollected.Add(int64(r.Blobs))
		j.Counters().ManifestsCollected.Add(int64(r.Manifests))
	}
	j.Log.Info("garbage collection", "dry_run", dryRun, "manifests", r.Manifests, "blobs", r.Blobs, "bytes", r.Bytes,
		"orphan_files", r.OrphanFiles, "accessories", r.Accessories, "seconds", time.Since(start).Seconds(), "err", err)
	return r, err
}

// Purge drops abandoned uploads now.
func (j *Jobs) Purge(ctx context.Context) (int, error) {
	return j.purge(ctx, nil)
}

func (j *Jobs) purge(ctx context.Context, due func() bool) (n int, err error) {
	ctx, release, err := j.take(ctx, purgeJob, due)
	if err != nil {
		return 0, err
	}
	defer func() { release(err == nil) }()
	start := time.Now()
	n, err = j.Store.PurgeUploads(ctx, j.PurgeAfter)
	timed(&j.Counters().PurgeNanos, start)
	j.Counters().PurgeRuns.Add(1)
	j.Counters().UploadsPurged.Add(int64(n))
	j.Log.Info("upload purge", "purged", n, "older_than", j.PurgeAfter.String(), "err", err)
	return n, err
}

// RetentionRun is what an on-demand retention run did: the totals of the policies it
// ran, and the names of those it skipped because they were running already.
type RetentionRun struct {
	Result
	Skipped []string `json:"skipped,omitempty"`
}

// Retention applies one policy (or every policy, one after another, when name is
// empty) now. A policy already running is skipped; with name empty the others still
// run, and ErrBusy is returned only when every policy was busy. A name no policy has
// is an error.
func (j *Jobs) Retention(ctx context.Context, name string) (RetentionRun, error) {
	return j.retention(ctx, name, nil)
}

func (j *Jobs) retention(ctx context.Context, name string, due func() bool) (RetentionRun, error) {
	var total RetentionRun
	ran, found := 0, false
	for _, p := range j.Engine.Policies {
		if name != "" && p.Name != name {
			continue
		}
		found = true
		jobCtx, release, err := j.take(ctx, retentionJob(p.Name), due, "policy", p.Name)
		if errors.Is(err, errNotDue) {
			continue
		}
		if errors.Is(err, ErrBusy) {
			total.Skipped = append(total.Skipped, p.Name)
			continue
		}
		if err != nil {
			return total, err
		}
		res, err := j.retain(jobCtx, p)
		release(err == nil)
		ran++
		total.TagsDeleted += res.TagsDeleted
		total.TagsChanged += res.TagsChanged
		total.UntaggedDeleted += res.UntaggedDeleted
		total.GarbageCollected = res.GarbageCollected
		if err != nil {
			return total, err
		}
	}
	if name != "" && !found {
		return total, oci.ErrNotFound.Withf("no retention policy is named %q", name)
	}
	if ran == 0 && len(total.Skipped) > 0 {
		return total, ErrBusy
	}
	return total, nil
}

// retain plans and applies one policy.
func (j *Jobs) retain(ctx context.Context, p Policy) (Result, error) {
	start := time.Now()
	e := *j.Engine
	e.Only = p.Name
	plan, err := e.Plan(ctx, "", "")
	if err != nil {
		return Result{}, err
	}
	res, err := e.Apply(ctx, plan, "", "", j.GCGrace)
	timed(&j.Counters().RetentionNanos, start)
	j.Counters().RetentionRuns.Add(1)
	j.Counters().TagsDeleted.Add(int64(res.TagsDeleted))
	j.Log.Info("retention", "policy", p.Name, "tags_deleted", res.TagsDeleted, "tags_changed", res.TagsChanged,
		"untagged_deleted", res.UntaggedDeleted, "err", err)
	return res, err
}
