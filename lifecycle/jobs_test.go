package lifecycle_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/lifecycle"
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
