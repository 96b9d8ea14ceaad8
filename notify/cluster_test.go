package notify

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/index/pgtest"
)

var pg *pgtest.Server

func TestMain(m *testing.M) { pgtest.Main(m, &pg) }

// Two instances sharing a PostgreSQL index: events recorded on either reach the
// endpoint, every one, delivered by one instance at a time (never two deliveries in
// flight at once); when the delivering instance stops, the other takes over.
func TestOneInstanceAtATimeDeliversAnEndpointOfASharedIndex(t *testing.T) {
	dsn := pgtest.Need(t, pg).NewDatabase(t)
	dir := t.TempDir()
	open := func(name string) *cache.Store {
		db, err := index.OpenPostgres(context.Background(), index.PostgresOptions{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		s, err := cache.Open(cache.Options{Dir: filepath.Join(dir, name), Index: db, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	var inFlight, most atomic.Int32
	var mu sync.Mutex
	seen := map[string]bool{} // event ids
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		if n > most.Load() {
			most.Store(n)
		}
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		seen[r.Header.Get(EventIDHeader)] = true
		mu.Unlock()
	}))
	defer srv.Close()
	ep := Endpoint{Name: "ci", URL: srv.URL, Actions: []Action{Push}}
	a, b := New(fast(open("a"), ep)), New(fast(open("b"), ep))
	a.Start(t.Context())
	b.Start(t.Context())
	defer b.Close()
	for i := range 20 {
		n := a
		if i%2 == 1 {
			n = b
		}
		if err := n.Record(push("team/app", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "twenty events", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 20 })
	a.Close()
	for i := range 5 {
		if err := b.Record(push("team/app", fmt.Sprint("after", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the events after a stopped", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 25 })
	if m := most.Load(); m != 1 {
		t.Errorf("%d deliveries in flight at once, want 1", m)
	}
}
