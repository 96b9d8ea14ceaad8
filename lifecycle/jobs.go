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
// lines and counters; the same jobs run on demand. A job does not run twice at once:
// one collection, one purge, and one run of each retention policy at a time; a run
// that finds its job busy is skipped, and says so in the log.
type Jobs struct {
	Engine *Engine
	Store  interface {
		CollectGarbage(ctx context.Context, opts cache.GCOptions) (cache.GCReport, error)
		PurgeUploads(ctx context.Context, maxAge time.Duration) (int, error)
		EvictCache(ctx context.Context, reg string, maxBytes int64, pulledWithin time.Duration) (cache.EvictReport, error)
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

	gcMu, purgeMu sync.Mutex
	policyMu      sync.Mutex
	policyLocks   map[string]*sync.Mutex // one per retention policy
	running       sync.WaitGroup
	// Counters since start.
	GCRuns, BlobsCollected, ManifestsCollected, UploadsPurged, RetentionRuns, TagsDeleted atomic.Int64
}

// Start runs the scheduled jobs until ctx ends.
func (j *Jobs) Start(ctx context.Context) {
	every := func(d time.Duration, run func()) {
		if d <= 0 {
			return
		}
		j.running.Add(1)
		go func() {
			defer j.running.Done()
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					run()
				}
			}
		}()
	}
	every(j.GCInterval, func() { j.GC(ctx, false) })
	every(j.PurgeInterval, func() { j.Purge(ctx) })
	for name, d := range j.RetentionEvery {
		every(d, func() { j.Retention(ctx, name) })
	}
}

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
	if !j.gcMu.TryLock() {
		return cache.GCReport{}, j.busy("gc")
	}
	defer j.gcMu.Unlock()
	start := time.Now()
	for _, e := range j.Evictions {
		if dryRun {
			break
		}
		r, err := j.Store.EvictCache(ctx, e.Registry, e.MaxBytes, e.PulledWithin)
		j.Log.Info("proxy cache eviction", "registry", e.Registry, "manifests", r.Manifests, "bytes", r.Bytes, "err", err)
		if err != nil {
			return cache.GCReport{}, err
		}
	}
	r, err := j.Store.CollectGarbage(ctx, cache.GCOptions{Grace: j.GCGrace, DryRun: dryRun})
	j.GCRuns.Add(1)
	if !dryRun {
		j.BlobsCollected.Add(int64(r.Blobs))
		j.ManifestsCollected.Add(int64(r.Manifests))
	}
	j.Log.Info("garbage collection", "dry_run", dryRun, "manifests", r.Manifests, "blobs", r.Blobs, "bytes", r.Bytes,
		"orphan_files", r.OrphanFiles, "seconds", time.Since(start).Seconds(), "err", err)
	return r, err
}

// Purge drops abandoned uploads now.
func (j *Jobs) Purge(ctx context.Context) (int, error) {
	if !j.purgeMu.TryLock() {
		return 0, j.busy("purge")
	}
	defer j.purgeMu.Unlock()
	n, err := j.Store.PurgeUploads(ctx, j.PurgeAfter)
	j.UploadsPurged.Add(int64(n))
	j.Log.Info("upload purge", "purged", n, "older_than", j.PurgeAfter.String(), "err", err)
	return n, err
}

// policyLock is the lock of one retention policy.
func (j *Jobs) policyLock(name string) *sync.Mutex {
	j.policyMu.Lock()
	defer j.policyMu.Unlock()
	if j.policyLocks == nil {
		j.policyLocks = map[string]*sync.Mutex{}
	}
	if j.policyLocks[name] == nil {
		j.policyLocks[name] = &sync.Mutex{}
	}
	return j.policyLocks[name]
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
	var total RetentionRun
	ran, found := 0, false
	for _, p := range j.Engine.Policies {
		if name != "" && p.Name != name {
			continue
		}
		found = true
		mu := j.policyLock(p.Name)
		if !mu.TryLock() {
			total.Skipped = append(total.Skipped, p.Name)
			j.busy("retention", "policy", p.Name)
			continue
		}
		res, err := j.retain(ctx, p)
		mu.Unlock()
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
	e := *j.Engine
	e.Only = p.Name
	plan, err := e.Plan(ctx, "", "")
	if err != nil {
		return Result{}, err
	}
	res, err := e.Apply(ctx, plan, "", "", j.GCGrace)
	j.RetentionRuns.Add(1)
	j.TagsDeleted.Add(int64(res.TagsDeleted))
	j.Log.Info("retention", "policy", p.Name, "tags_deleted", res.TagsDeleted, "tags_changed", res.TagsChanged,
		"untagged_deleted", res.UntaggedDeleted, "err", err)
	return res, err
}
