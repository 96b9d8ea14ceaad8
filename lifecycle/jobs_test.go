package lifecycle_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/lifecycle"
	"github.com/dockyard/dockyard/oci"
)

// pausing is the real store with TagInfos of one repository held until released, to
// keep a retention run going while the test starts others.
type pausing struct {
	*cache.Store
	repo    string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (p *pausing) TagInfos(ctx context.Context, reg, repo string) ([]cache.TagInfo, error) {
	if repo == p.repo {
		p.once.Do(func() { close(p.entered) })
		<-p.release
	}
	return p.Store.TagInfos(ctx, reg, repo)
}

// Each retention policy runs on its own: a long run of one does not stop another, and
// a run skipped because its policy is busy is logged.
func TestRetentionPoliciesRunIndependently(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := start(t, clk, nil)
	for _, repo := range []string{"a/svc", "b/svc"} {
		for _, tag := range []string{"1.0", "2.0"} {
			clk.Advance(time.Minute)
			if st, body := r.push(repo, tag, repo+tag); st != 201 {
				t.Fatalf("push: %d %s", st, body)
			}
		}
	}
	store := &pausing{Store: r.store, repo: "a/svc", entered: make(chan struct{}), release: make(chan struct{})}
	var logs bytes.Buffer
	keepLast := []lifecycle.Rule{lifecycle.KeepLast{Count: 1}}
	j := &lifecycle.Jobs{Log: slog.New(slog.NewTextHandler(&logs, nil)), Store: r.store,
		Engine: &lifecycle.Engine{Store: store, Registries: []string{"dev"}, Classes: lifecycle.DefaultClasses(), Now: clk.Now,
			Policies: []lifecycle.Policy{
				{Name: "A", Registries: []string{"dev"}, Repositories: []string{"a/**"}, Rules: keepLast},
				// B covers a/** too, but A, first, governs it.
				{Name: "B", Registries: []string{"dev"}, Repositories: []string{"**"}, Rules: keepLast},
			}}}
	done := make(chan error)
	go func() { _, err := j.Retention(context.Background(), "A"); done <- err }()
	<-store.entered
	res, err := j.Retention(context.Background(), "B")
	if err != nil || res.TagsDeleted != 1 {
		t.Errorf("policy B while A runs: %+v %v", res, err)
	}
	if st, _ := r.do("GET", "/v2/a/svc/manifests/1.0", nil, ""); st != 200 {
		t.Errorf("policy B deleted a tag of a repository policy A governs: %d", st)
	}
	if _, err := j.Retention(context.Background(), "A"); !errors.Is(err, lifecycle.ErrBusy) {
		t.Errorf("policy A while it runs: %v, want busy", err)
	}
	if !strings.Contains(logs.String(), "job skipped") || !strings.Contains(logs.String(), "policy=A") {
		t.Errorf("the skipped run is not logged: %s", logs.String())
	}
	close(store.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"a/svc", "b/svc"} {
		if st, _ := r.do("GET", "/v2/"+repo+"/manifests/1.0", nil, ""); st != 404 {
			t.Errorf("%s:1.0 after both policies ran: %d", repo, st)
		}
	}
}

// A run of a policy no policy is named after is an error, not a run that does nothing.
func TestRetentionOfAnUnknownPolicyIsAnError(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := start(t, clk, nil)
	j := &lifecycle.Jobs{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: r.store,
		Engine: &lifecycle.Engine{Store: r.store, Registries: []string{"dev"}, Classes: lifecycle.DefaultClasses(), Now: clk.Now,
			Policies: []lifecycle.Policy{{Name: "A", Registries: []string{"dev"}, Repositories: []string{"**"}, Rules: []lifecycle.Rule{lifecycle.KeepLast{Count: 1}}}}}}
	if _, err := j.Retention(context.Background(), "nightyl"); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("a run of policy %q, which does not exist: %v, want NOT_FOUND", "nightyl", err)
	}
}

// An on-demand run of every policy runs those that are idle and names the busy ones
// it skipped, in its answer as well as in the log.
func TestRetentionOfEveryPolicyNamesThoseItSkipped(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := start(t, clk, nil)
	for _, repo := range []string{"a/svc", "b/svc"} {
		for _, tag := range []string{"1.0", "2.0"} {
			clk.Advance(time.Minute)
			if st, body := r.push(repo, tag, repo+tag); st != 201 {
				t.Fatalf("push: %d %s", st, body)
			}
		}
	}
	store := &pausing{Store: r.store, repo: "a/svc", entered: make(chan struct{}), release: make(chan struct{})}
	var logs bytes.Buffer
	keepLast := []lifecycle.Rule{lifecycle.KeepLast{Count: 1}}
	j := &lifecycle.Jobs{Log: slog.New(slog.NewTextHandler(&logs, nil)), Store: r.store,
		Engine: &lifecycle.Engine{Store: store, Registries: []string{"dev"}, Classes: lifecycle.DefaultClasses(), Now: clk.Now,
			Policies: []lifecycle.Policy{
				{Name: "A", Registries: []string{"dev"}, Repositories: []string{"a/**"}, Rules: keepLast},
				{Name: "B", Registries: []string{"dev"}, Repositories: []string{"b/**"}, Rules: keepLast},
			}}}
	done := make(chan error)
	go func() { _, err := j.Retention(context.Background(), "A"); done <- err }()
	<-store.entered
	res, err := j.Retention(context.Background(), "")
	if err != nil || res.TagsDeleted != 1 || len(res.Skipped) != 1 || res.Skipped[0] != "A" {
		t.Errorf("every policy while A runs: %+v %v, want B run and A skipped", res, err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "policy=A") {
		t.Errorf("the skipped policy is not logged as a warning: %s", logs.String())
	}
	close(store.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// losing is the real store whose job locks can be lost on demand, and whose garbage
// collection waits for its context (a long collection).
type losing struct {
	*cache.Store
	lose    context.CancelFunc
	running chan struct{}
}

func (l *losing) TryLock(ctx context.Context, key string) (context.Context, func(), bool, error) {
	held, unlock, ok, err := l.Store.TryLock(ctx, key)
	if !ok || err != nil {
		return held, unlock, ok, err
	}
	h, lose := context.WithCancel(held)
	l.lose = lose
	return h, unlock, true, nil
}

func (l *losing) CollectGarbage(ctx context.Context, opts cache.GCOptions) (cache.GCReport, error) {
	close(l.running)
	select {
	case <-ctx.Done():
		return cache.GCReport{}, ctx.Err()
	case <-time.After(30 * time.Second):
		return cache.GCReport{}, nil
	}
}

// A job whose lock is lost (its connection died: another instance may start the job
// now) stops instead of running on beside the other.
func TestAJobStopsWhenItsLockIsLost(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := start(t, clk, nil)
	store := &losing{Store: r.store, running: make(chan struct{})}
	j := &lifecycle.Jobs{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: store,
		Engine: &lifecycle.Engine{Store: r.store, Registries: []string{"dev"}, Classes: lifecycle.DefaultClasses(), Now: clk.Now}}
	done := make(chan error)
	go func() { _, err := j.GC(context.Background(), false); done <- err }()
	<-store.running
	store.lose()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the collection ended with %v, want it cancelled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the collection ran on after its lock was lost")
	}
}
