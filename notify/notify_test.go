package notify

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/cache"
)

// receiver is a real HTTP endpoint that keeps what it is sent and answers status
// (200 unless set); while hold is set, it keeps every request waiting.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	got    []delivery
	hold   chan struct{}
}

type delivery struct {
	header http.Header
	body   []byte
	event  Event
	at     time.Time
	status int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.status.Store(200)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		hold := r.hold
		r.mu.Unlock()
		if hold != nil {
			<-hold
		}
		body, _ := io.ReadAll(req.Body)
		d := delivery{header: req.Header.Clone(), body: body, at: time.Now(), status: int(r.status.Load())}
		if err := json.Unmarshal(body, &d.event); err != nil {
			t.Errorf("the body is not an event: %v: %s", err, body)
		}
		r.mu.Lock()
		r.got = append(r.got, d)
		r.mu.Unlock()
		w.WriteHeader(d.status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// accepted lists the deliveries answered 2xx.
func (r *receiver) accepted() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []delivery
	for _, d := range r.got {
		if d.status/100 == 2 {
			out = append(out, d)
		}
	}
	return out
}

func (r *receiver) all() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func openStore(t *testing.T, dir string) *cache.Store {
	t.Helper()
	s, err := cache.Open(cache.Options{Dir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// A cleanup, not a defer in the test: cleanups run last-registered first, so a
	// notifier started after the store (started registers its Close) stops before
	// the store closes under it. Close may run twice.
	t.Cleanup(func() { s.Close() })
	return s
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fast is the options of a notifier that polls and retries in milliseconds.
func fast(store Store, eps ...Endpoint) Options {
	for i := range eps {
		if eps[i].BackoffInitial == 0 {
			eps[i].BackoffInitial, eps[i].BackoffMax = 5*time.Millisecond, 20*time.Millisecond
		}
	}
	return Options{Endpoints: eps, Store: store, Logger: quiet, Instance: "test",
		PullFlush: 10 * time.Millisecond, Poll: 10 * time.Millisecond, LockRetry: 10 * time.Millisecond, TrimEvery: 10 * time.Millisecond}
}

func started(t *testing.T, opts Options) *Notifier {
	n := New(opts)
	n.Start(t.Context())
	t.Cleanup(n.Close)
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func push(repo, tag string) Event {
	return Event{Action: Push, Registry: "dev", Repository: repo, Tag: tag, Digest: "sha256:" + fmt.Sprintf("%064d", 1),
		MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 123, Actor: "alice", RequestID: 7}
}

func writeFile(t *testing.T, dir, name, content string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every delivery is a JSON event with its id in a header, the configured headers (from
// files too), and a valid HMAC-SHA256 signature of the exact body.
func TestDeliveriesAreSignedAndCarryTheConfiguredHeaders(t *testing.T) {
	dir := t.TempDir()
	store := openStore(t, filepath.Join(dir, "data"))
	rcv := newReceiver(t)
	secret := writeFile(t, dir, "secret", "s3cr3t\n")
	token := writeFile(t, dir, "token", "Bearer abc\n")
	n := started(t, fast(store, Endpoint{Name: "ci", URL: rcv.srv.URL, Actions: []Action{Push}, SecretFile: secret,
		Headers: map[string]Header{"Authorization": {File: token}, "X-Team": {Value: "platform"}}}))
	if err := n.Record(push("team/app", "1.0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a delivery", func() bool { return len(rcv.accepted()) == 1 })
	d := rcv.accepted()[0]
	// Recomputed here, as a receiver would, not with Sign.
	m := hmac.New(sha256.New, []byte("s3cr3t"))
	m.Write(d.body)
	if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); d.header.Get(SignatureHeader) != want {
		t.Errorf("signature %q, want %q", d.header.Get(SignatureHeader), want)
	}
	if !Verify([]byte("s3cr3t"), d.body, d.header.Get(SignatureHeader)) || Verify([]byte("other"), d.body, d.header.Get(SignatureHeader)) {
		t.Error("Verify disagrees with the signature")
	}
	for h, want := range map[string]string{"Authorization": "Bearer abc", "X-Team": "platform",
		"Content-Type": "application/json", EventIDHeader: d.event.ID} {
		if got := d.header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	e := d.event
	if len(e.ID) != 32 || e.Action != Push || e.Registry != "dev" || e.Repository != "team/app" || e.Tag != "1.0" ||
		e.Size != 123 || e.Actor != "alice" || e.RequestID != 7 || e.Instance != "test" || e.Timestamp.IsZero() {
		t.Errorf("event %+v", e)
	}
}

// An endpoint answering 500 gets the event again, after growing pauses, until it
// answers 2xx; later events wait behind it, so the order holds.
func TestFailedDeliveriesAreRetriedWithBackoffInOrder(t *testing.T) {
	store := openStore(t, t.TempDir())
	rcv := newReceiver(t)
	rcv.status.Store(500)
	n := started(t, fast(store, Endpoint{Name: "ci", URL: rcv.srv.URL, Actions: []Action{Push},
		BackoffInitial: 20 * time.Millisecond, BackoffMax: 80 * time.Millisecond}))
	for i := range 5 {
		if err := n.Record(push("team/app", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "five failed attempts", func() bool { return len(rcv.all()) >= 5 })
	rcv.status.Store(200)
	waitFor(t, "every event", func() bool { return len(rcv.accepted()) == 5 })

	all := rcv.all()
	first := all[0].event.ID
	var failed []delivery
	for _, d := range all {
		if d.status != 200 {
			failed = append(failed, d)
			if d.event.ID != first {
				t.Fatalf("a later event (%s) was sent while the first failed", d.event.Tag)
			}
		}
	}
	// Pauses of at least 20, 40, 80, 80 ms.
	for i, want := range []time.Duration{20, 40, 80, 80} {
		if i+1 >= len(failed) {
			break
		}
		if gap := failed[i+1].at.Sub(failed[i].at); gap < want*time.Millisecond {
			t.Errorf("retry %d after %s, want at least %dms", i+1, gap, want)
		}
	}
	var tags, ids []string
	for _, d := range rcv.accepted() {
		tags = append(tags, d.event.Tag)
		ids = append(ids, d.event.ID)
	}
	if !slices.Equal(tags, []string{"0", "1", "2", "3", "4"}) {
		t.Errorf("delivered in order %v", tags)
	}
	if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != 5 {
		t.Errorf("ids not unique and time-ordered: %v", ids)
	}
	// The receiver keeps a delivery before it answers: the notifier counts the last
	// one a moment later.
	c := n.Counters()[0]
	waitFor(t, "the last delivery counted", func() bool { return c.Sent.Load() >= 5 })
	if c.Sent.Load() != 5 || c.Failed.Load() < 5 {
		t.Errorf("sent %d, failed %d", c.Sent.Load(), c.Failed.Load())
	}
}

// Each endpoint gets the events of its actions, registries and repository globs only.
func TestEndpointsGetOnlyTheEventsTheySubscribeTo(t *testing.T) {
	store := openStore(t, t.TempDir())
	all, prodTeam, pulls := newReceiver(t), newReceiver(t), newReceiver(t)
	n := started(t, fast(store,
		Endpoint{Name: "all", URL: all.srv.URL, Actions: []Action{Push, Delete, Retention}},
		Endpoint{Name: "prod-team", URL: prodTeam.srv.URL, Actions: []Action{Push, Delete}, Registries: []string{"prod"}, Repositories: []string{"team/**"}},
		Endpoint{Name: "pulls", URL: pulls.srv.URL, Actions: []Action{Pull}},
	))
	events := []Event{
		{Action: Push, Registry: "prod", Repository: "team/a/b", Tag: "1"},    // all, prod-team
		{Action: Push, Registry: "dev", Repository: "team/a", Tag: "2"},       // all
		{Action: Delete, Registry: "prod", Repository: "other/a", Tag: "3"},   // all
		{Action: Retention, Registry: "prod", Repository: "team/a", Tag: "4"}, // all
		{Action: Pull, Registry: "prod", Repository: "team/a", Tag: "5"},      // pulls
		{Action: Delete, Registry: "prod", Repository: "team/x", Tag: "6"},    // all, prod-team
	}
	for _, e := range events {
		if err := n.Record(e); err != nil {
			t.Fatal(err)
		}
	}
	tags := func(r *receiver) []string {
		var out []string
		for _, d := range r.accepted() {
			out = append(out, d.event.Tag)
		}
		return out
	}
	waitFor(t, "deliveries", func() bool {
		return len(all.accepted()) == 5 && len(prodTeam.accepted()) == 2 && len(pulls.accepted()) == 1
	})
	time.Sleep(50 * time.Millisecond) // nothing more comes
	for _, c := range []struct {
		r    *receiver
		want []string
	}{{all, []string{"1", "2", "3", "4", "6"}}, {prodTeam, []string{"1", "6"}}, {pulls, []string{"5"}}} {
		if got := tags(c.r); !slices.Equal(got, c.want) {
			t.Errorf("got %v, want %v", got, c.want)
		}
	}
}

// Recording never waits for an endpoint: with the receiver holding every request,
// events are still recorded (and delivered once it answers).
func TestASlowEndpointNeverSlowsRecording(t *testing.T) {
	store := openStore(t, t.TempDir())
	rcv := newReceiver(t)
	rcv.hold = make(chan struct{})
	n := started(t, fast(store, Endpoint{Name: "slow", URL: rcv.srv.URL, Actions: []Action{Push}, Timeout: time.Minute}))
	done := make(chan error)
	go func() {
		for i := range 20 {
			if err := n.Record(push("team/app", fmt.Sprint(i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("recording waited for the endpoint")
	}
	rcv.mu.Lock()
	close(rcv.hold)
	rcv.hold = nil
	rcv.mu.Unlock()
	waitFor(t, "every event", func() bool { return len(rcv.accepted()) == 20 })
}

// Events survive the process: queued while the endpoint is down, delivered by the next
// notifier on the same index.
func TestQueuedEventsSurviveARestart(t *testing.T) {
	dir := t.TempDir()
	store := openStore(t, dir)
	rcv := newReceiver(t)
	rcv.status.Store(503)
	ep := Endpoint{Name: "ci", URL: rcv.srv.URL, Actions: []Action{Push, Pull}}
	n := New(fast(store, ep))
	n.Start(t.Context())
	for i := range 3 {
		if err := n.Record(push("team/app", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	n.Record(Event{Action: Pull, Registry: "dev", Repository: "team/app", Tag: "p"})
	waitFor(t, "a failed attempt", func() bool { return len(rcv.all()) > 0 })
	n.Close() // the buffered pull is written
	store.Close()

	rcv.status.Store(200)
	store = openStore(t, dir)
	started(t, fast(store, ep))
	waitFor(t, "every event", func() bool { return len(rcv.accepted()) == 4 })
	var tags []string
	for _, d := range rcv.accepted() {
		tags = append(tags, d.event.Tag)
	}
	if !slices.Equal(tags, []string{"0", "1", "2", "p"}) {
		t.Errorf("after the restart: %v", tags)
	}
}

// max_events bounds a queue: beyond it the oldest events are dropped and counted.
func TestAQueueOverMaxEventsDropsItsOldest(t *testing.T) {
	store := openStore(t, t.TempDir())
	rcv := newReceiver(t)
	rcv.status.Store(503)
	n := started(t, fast(store, Endpoint{Name: "ci", URL: rcv.srv.URL, Actions: []Action{Push}, MaxEvents: 4}))
	for i := range 10 {
		if err := n.Record(push("team/app", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	c := n.Counters()[0]
	waitFor(t, "six dropped", func() bool { return c.Dropped.Load() == 6 })
	rcv.status.Store(200)
	waitFor(t, "the rest", func() bool { return len(rcv.accepted()) == 4 })
	time.Sleep(50 * time.Millisecond)
	var tags []string
	for _, d := range rcv.accepted() {
		tags = append(tags, d.event.Tag)
	}
	if !slices.Equal(tags, []string{"6", "7", "8", "9"}) {
		t.Errorf("delivered %v, want the newest four", tags)
	}
}

// An event undelivered past max_age is dropped and counted, never delivered.
func TestEventsOlderThanMaxAgeAreDropped(t *testing.T) {
	store := openStore(t, t.TempDir())
	rcv := newReceiver(t)
	var now atomic.Int64
	now.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	opts := fast(store, Endpoint{Name: "ci", URL: rcv.srv.URL, Actions: []Action{Push}, MaxAge: time.Hour})
	opts.Now = func() time.Time { return time.Unix(0, now.Load()) }
	n := New(opts)
	n.Record(push("team/app", "old")) // two hours ago
	now.Store(time.Now().UnixNano())
	n.Record(push("team/app", "new"))
	n.Start(t.Context())
	defer n.Close()
	waitFor(t, "the new event", func() bool { return len(rcv.accepted()) == 1 })
	if d := rcv.all(); len(d) != 1 || d[0].event.Tag != "new" {
		t.Errorf("delivered %+v", d)
	}
	if c := n.Counters()[0]; c.Dropped.Load() != 1 {
		t.Errorf("dropped %d, want 1", c.Dropped.Load())
	}
}

// Pull events are buffered (at most PullBuffer) and written in batches.
func TestPullEventsAreBufferedWithinTheirBound(t *testing.T) {
	dir := t.TempDir()
	store := openStore(t, dir)
	rcv := newReceiver(t)
	opts := fast(store, Endpoint{Name: "ci", URL: rcv.srv.URL, Actions: []Action{Pull}})
	opts.PullBuffer, opts.PullFlush = 3, time.Hour
	n := New(opts)
	for i := range 5 {
		n.Record(Event{Action: Pull, Registry: "dev", Repository: "team/app", Tag: fmt.Sprint(i)})
	}
	if l, _ := store.EventQueue(pullQueue("ci")).Len(); l != 0 {
		t.Fatalf("%d pull events written before the flush", l)
	}
	n.Close() // flushes
	if l, _ := store.EventQueue(pullQueue("ci")).Len(); l != 3 {
		t.Fatalf("%d pull events written, want the buffer's 3", l)
	}
	if c := n.Counters()[0]; c.Dropped.Load() != 2 {
		t.Errorf("dropped %d, want 2", c.Dropped.Load())
	}
}

// A flood of pulls (anyone allowed to pull can make one) never pushes a push event out
// of an endpoint's queue, and the pull queue is held to max_events while the endpoint
// fails, not only between its pauses.
func TestPullsNeverPushOutPushEvents(t *testing.T) {
	store := openStore(t, t.TempDir())
	rcv := newReceiver(t)
	rcv.status.Store(503)
	opts := fast(store, Endpoint{Name: "ci", URL: rcv.srv.URL, Actions: []Action{Push, Pull}, MaxEvents: 5,
		BackoffInitial: time.Second, BackoffMax: time.Second}) // long pauses: trims happen during them
	n := started(t, opts)
	if err := n.Record(push("team/app", "release-1")); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		n.Record(Event{Action: Pull, Registry: "dev", Repository: "team/app", Tag: fmt.Sprint(i)})
	}
	waitFor(t, "the pull queue trimmed to 5", func() bool {
		l, _ := store.EventQueue(pullQueue("ci")).Len()
		return l <= 5 && n.Counters()[0].Dropped.Load() >= 195
	})
	rcv.status.Store(200)
	waitFor(t, "the push delivered", func() bool {
		for _, d := range rcv.accepted() {
			if d.event.Action == Push && d.event.Tag == "release-1" {
				return true
			}
		}
		return false
	})
}

// An endpoint's URL path and query can be its credential (Slack- and Teams-style
// webhooks): a failed delivery's log line names the host only.
func TestFailedDeliveriesDoNotLogTheURLsSecrets(t *testing.T) {
	store := openStore(t, t.TempDir())
	var logs bytes.Buffer
	var mu sync.Mutex
	opts := fast(store, Endpoint{Name: "ci", URL: "http://u:pw-SECRET@127.0.0.1:1/services/PATHSECRET?token=QSECRET", Actions: []Action{Push}})
	opts.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	n := started(t, opts)
	n.Record(push("team/app", "1"))
	waitFor(t, "a failed delivery", func() bool { return n.Counters()[0].Failed.Load() > 0 })
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	for _, secret := range []string{"SECRET", "PATHSECRET", "QSECRET", "pw-"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "127.0.0.1:1") {
		t.Errorf("the log does not name the endpoint's host:\n%s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
