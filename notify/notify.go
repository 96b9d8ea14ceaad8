// Package notify owns outgoing notifications (webhooks): turning what happened in the
// registry (a manifest pushed, deleted or pulled, a tag deleted by retention) into
// events, queueing them durably in the index — one queue per endpoint, through package
// cache, which keeps the bytes and knows nothing of HTTP —, and delivering them to the
// endpoints' URLs, signed, in order, retried with backoff until a 2xx answer.
//
// Delivery is at least once: an event leaves its queue only after its endpoint
// answered 2xx, so one delivered just before a crash or a lost lock may be delivered
// again; receivers deduplicate by the event id. A push or delete is acknowledged to
// its client only once its events are in the index; delivery is asynchronous, so a
// slow or unreachable endpoint never slows requests.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
)

// Action is what an event reports.
type Action string

// The actions, as configured (notifications[].events) and sent (the action field).
const (
	Push      Action = "push"      // a manifest was pushed (PUT, 201), by tag or digest
	Delete    Action = "delete"    // a manifest or tag was deleted (DELETE, 202)
	Pull      Action = "pull"      // a manifest was pulled (GET, 200; not HEAD, not 304)
	Retention Action = "retention" // a retention policy deleted a tag
)

// Actions lists every action.
var Actions = []Action{Push, Delete, Pull, Retention}

// Event is one notification, as POSTed (JSON) to an endpoint.
type Event struct {
	// ID is unique (128 bits: the event time in nanoseconds, then 64 random bits, in
	// hex, so that ids sort by time): receivers deduplicate by it.
	ID         string    `json:"id"`
	Timestamp  time.Time `json:"timestamp"`
	Action     Action    `json:"action"`
	Registry   string    `json:"registry"`
	Repository string    `json:"repository"`
	Tag        string    `json:"tag,omitempty"`
	Digest     string    `json:"digest,omitempty"`
	MediaType  string    `json:"media_type,omitempty"`
	Size       int64     `json:"size,omitempty"`
	// Actor is the user (empty: anonymous, or authentication is off), or
	// "retention/POLICY" for a tag a policy deleted.
	Actor string `json:"actor,omitempty"`
	// RequestID is the request's id in this instance's access log.
	RequestID uint64 `json:"request_id,omitempty"`
	Instance  string `json:"instance,omitempty"`
}

// Endpoint is one configured receiver (notifications[]).
type Endpoint struct {
	// Name names the endpoint's queue and lock: renaming an endpoint abandons what its
	// queue held.
	Name string
	URL  string
	// Actions it is sent; Registries (names or "*") and Repositories (globs as auth
	// rules write them) narrow them, empty meaning all.
	Actions      []Action
	Registries   []string
	Repositories []string
	// Headers are sent with every delivery; a header's value may come from a file,
	// read at each delivery (a rotated credential is picked up without a restart).
	Headers map[string]Header
	// SecretFile holds the key of the HMAC-SHA256 signature of each body (empty: the
	// deliveries are not signed); read at each delivery.
	SecretFile string
	// Timeout bounds one delivery, connecting to reading the answer.
	Timeout time.Duration
	// A failed delivery is retried after BackoffInitial, doubling up to BackoffMax.
	BackoffInitial, BackoffMax time.Duration
	// MaxAge: an event not delivered this long after it happened is dropped.
	MaxAge time.Duration
	// MaxEvents bounds the queue: beyond it, the oldest events are dropped.
	MaxEvents int
}

// The defaults of an endpoint's settings (config applies the same).
const (
	DefaultTimeout        = 5 * time.Second
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = 5 * time.Minute
	DefaultMaxAge         = 24 * time.Hour
	DefaultMaxEvents      = 100000
)

func (e *Endpoint) withDefaults() {
	if e.Timeout <= 0 {
		e.Timeout = DefaultTimeout
	}
	if e.BackoffInitial <= 0 {
		e.BackoffInitial = DefaultBackoffInitial
	}
	if e.BackoffMax <= 0 {
		e.BackoffMax = DefaultBackoffMax
	}
	e.BackoffInitial = min(e.BackoffInitial, e.BackoffMax)
	if e.MaxAge <= 0 {
		e.MaxAge = DefaultMaxAge
	}
	if e.MaxEvents <= 0 {
		e.MaxEvents = DefaultMaxEvents
	}
}

// Header is a header's value, or the file holding it.
type Header struct{ Value, File string }

// The headers of a delivery besides the configured ones.
const (
	SignatureHeader = "X-Dockyard-Signature" // sha256=<hex HMAC-SHA256 of the body>
	EventIDHeader   = "X-Dockyard-Event-Id"
)

// Store is what notify needs of the index.
type Store interface {
	Enqueue(items []cache.EventItem) error
	EventQueue(name string) cache.EventQueue
	TryLock(ctx context.Context, key string) (held context.Context, unlock func(), ok bool, err error)
}

// Options configure a Notifier.
type Options struct {
	Endpoints []Endpoint
	Store     Store
	Logger    *slog.Logger
	// Instance names this instance in events (its host name).
	Instance string
	// Pull events are buffered in memory and written every PullFlush (default 1s), at
	// most PullBuffer of them (default 10000; more are dropped and counted).
	PullFlush  time.Duration
	PullBuffer int
	// Poll is how often an idle deliverer looks at its queue for events other
	// instances queued (default 1s; this instance's own wake it at once). LockRetry is
	// how often an instance that does not deliver an endpoint tries to take it over
	// (default 5s). TrimEvery is how often a deliverer enforces MaxEvents (default 10s).
	Poll, LockRetry, TrimEvery time.Duration
	// Now is the clock (tests).
	Now func() time.Time
	// Transport makes the deliveries' connections (default: a clone of
	// http.DefaultTransport).
	Transport http.RoundTripper
}

// Counters are one endpoint's counts since start.
type Counters struct {
	Endpoint string
	// Sent: delivered (2xx). Failed: delivery attempts that failed (each retried).
	// Dropped: events given up (older than max_age, beyond max_events, or pulls beyond
	// the buffer). Queued: the queue's length when the deliverer last counted it.
	Sent, Failed, Dropped, Queued *atomic.Int64
}

// Notifier records events and delivers them.
type Notifier struct {
	opts Options
	log  *slog.Logger
	eps  []*endpoint

	idMu   sync.Mutex
	lastID int64

	pullMu sync.Mutex
	pulls  []pending

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type endpoint struct {
	Endpoint
	client                        *http.Client
	wake                          chan struct{}
	sent, failed, dropped, queued atomic.Int64
}

type pending struct {
	ep   *endpoint
	item cache.EventItem
}

// New makes a notifier; it queues events at once, and delivers them after Start.
func New(opts Options) *Notifier {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PullFlush <= 0 {
		opts.PullFlush = time.Second
	}
	if opts.PullBuffer <= 0 {
		opts.PullBuffer = 10000
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.LockRetry <= 0 {
		opts.LockRetry = 5 * time.Second
	}
	if opts.TrimEvery <= 0 {
		opts.TrimEvery = 10 * time.Second
	}
	if opts.Transport == nil {
		opts.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	n := &Notifier{opts: opts, log: opts.Logger}
	for _, e := range opts.Endpoints {
		e.withDefaults()
		ep := &endpoint{Endpoint: e, wake: make(chan struct{}, 1)}
		ep.client = &http.Client{Transport: opts.Transport, Timeout: e.Timeout,
			// A redirect is an answer other than 2xx: the event is retried, at the
			// configured URL.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		n.eps = append(n.eps, ep)
	}
	return n
}

// Counters returns every endpoint's counters.
func (n *Notifier) Counters() []Counters {
	out := make([]Counters, len(n.eps))
	for i, ep := range n.eps {
		out[i] = Counters{Endpoint: ep.Name, Sent: &ep.sent, Failed: &ep.failed, Dropped: &ep.dropped, Queued: &ep.queued}
	}
	return out
}

func (ep *endpoint) wants(e *Event) bool {
	if !slices.Contains(ep.Actions, e.Action) {
		return false
	}
	if len(ep.Registries) > 0 && !auth.MatchRegistry(ep.Registries, e.Registry) {
		return false
	}
	if len(ep.Repositories) == 0 {
		return true
	}
	for _, g := range ep.Repositories {
		if auth.MatchGlob(g, e.Repository) {
			return true
		}
	}
	return false
}

// Record queues e for every endpoint it concerns (its ID, Timestamp and Instance are
// filled in). A push, delete or retention event is in the index when Record returns
// nil; a pull is buffered and written within PullFlush (lost if the process dies
// meanwhile), so that frequent pulls cost one index write a second, not one each.
func (n *Notifier) Record(e Event) error {
	var to []*endpoint
	for _, ep := range n.eps {
		if ep.wants(&e) {
			to = append(to, ep)
		}
	}
	if len(to) == 0 {
		return nil
	}
	e.ID, e.Timestamp = n.newID()
	e.Instance = n.opts.Instance
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if e.Action == Pull {
		n.buffer(to, e.ID, body)
		return nil
	}
	items := make([]cache.EventItem, len(to))
	for i, ep := range to {
		items[i] = cache.EventItem{Queue: ep.Name, ID: e.ID, Body: body}
	}
	if err := n.opts.Store.Enqueue(items); err != nil {
		return fmt.Errorf("queue %s event: %w", e.Action, err)
	}
	for _, ep := range to {
		ep.poke()
	}
	return nil
}

func (ep *endpoint) poke() {
	select {
	case ep.wake <- struct{}{}:
	default:
	}
}

// newID makes a unique event id, later than every earlier one of this process.
func (n *Notifier) newID() (string, time.Time) {
	n.idMu.Lock()
	t := n.opts.Now().UnixNano()
	if t <= n.lastID {
		t = n.lastID + 1
	}
	n.lastID = t
	n.idMu.Unlock()
	var r [8]byte
	rand.Read(r[:])
	return fmt.Sprintf("%016x%s", uint64(t), hex.EncodeToString(r[:])), time.Unix(0, t).UTC()
}

// idTime is when the event with id happened.
func idTime(id string) time.Time {
	if len(id) < 16 {
		return time.Time{}
	}
	t, err := strconv.ParseUint(id[:16], 16, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, int64(t))
}

// buffer keeps pull events until the next flush, at most PullBuffer.
func (n *Notifier) buffer(to []*endpoint, id string, body []byte) {
	n.pullMu.Lock()
	defer n.pullMu.Unlock()
	for _, ep := range to {
		if len(n.pulls) >= n.opts.PullBuffer {
			ep.dropped.Add(1)
			if ep.dropped.Load()%1000 == 1 {
				n.log.Error("notifications: pull event buffer full; pull events dropped", "endpoint", ep.Name,
					"buffer", n.opts.PullBuffer, "dropped_total", ep.dropped.Load())
			}
			continue
		}
		n.pulls = append(n.pulls, pending{ep, cache.EventItem{Queue: pullQueue(ep.Name), ID: id, Body: body}})
	}
}

// flushPulls writes the buffered pull events in one transaction; on failure they stay
// buffered (within the bound) for the next flush.
func (n *Notifier) flushPulls() {
	n.pullMu.Lock()
	batch := n.pulls
	n.pulls = nil
	n.pullMu.Unlock()
	if len(batch) == 0 {
		return
	}
	items := make([]cache.EventItem, len(batch))
	for i, p := range batch {
		items[i] = p.item
	}
	if err := n.opts.Store.Enqueue(items); err != nil {
		n.log.Warn("notifications: pull events not queued; retrying", "events", len(batch), "err", err)
		n.pullMu.Lock()
		room := max(n.opts.PullBuffer-len(n.pulls), 0)
		for i, p := range batch {
			if i < room {
				n.pulls = append(n.pulls, p)
			} else {
				p.ep.dropped.Add(1)
			}
		}
		n.pullMu.Unlock()
		return
	}
	for _, p := range batch {
		p.ep.poke()
	}
}

// Start delivers until ctx ends or Close.
func (n *Notifier) Start(ctx context.Context) {
	ctx, n.cancel = context.WithCancel(ctx)
	for _, ep := range n.eps {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.serve(ctx, ep)
		}()
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTicker(n.opts.PullFlush)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n.flushPulls()
			}
		}
	}()
}

// Close stops delivering and writes the pull events still buffered. What is queued
// stays queued, for the next start (of this instance or another on the index).
func (n *Notifier) Close() {
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	n.flushPulls()
}

// serve delivers one endpoint's queue whenever this instance holds its lock: one
// instance at a time delivers an endpoint, across every instance on the index.
func (n *Notifier) serve(ctx context.Context, ep *endpoint) {
	for {
		held, unlock, ok, err := n.opts.Store.TryLock(ctx, "notify/"+ep.Name)
		switch {
		case err != nil && ctx.Err() == nil:
			n.log.Warn("notifications: endpoint lock unavailable", "endpoint", ep.Name, "err", err)
		case ok:
			dctx, cancel := context.WithCancel(ctx)
			stop := context.AfterFunc(held, cancel)
			n.deliver(dctx, ep)
			stop()
			cancel()
			unlock()
		}
		if !sleep(ctx, n.opts.LockRetry, nil) {
			return
		}
	}
}

// batch is how many events a deliverer reads from its queue at once.
const batch = 100

// pullQueue names an endpoint's queue of pull events. Pulls (which anyone allowed to
// pull makes, as fast as they like) are queued apart from pushes, deletes and retention
// deletes, and bounded apart: a flood of pulls never pushes those out of the queue.
// Endpoint names hold no "/".
func pullQueue(endpoint string) string { return endpoint + "/pulls" }

// deliver sends the queues' events in order until ctx ends: pushes, deletes and
// retention deletes first, pulls when none of those wait. A failed event is retried,
// after a growing pause, before any later one of its queue: the order holds. Both
// queues are trimmed to max_events every TrimEvery, during pauses too.
func (n *Notifier) deliver(ctx context.Context, ep *endpoint) {
	main, pulls := n.opts.Store.EventQueue(ep.Name), n.opts.Store.EventQueue(pullQueue(ep.Name))
	backoff := ep.BackoffInitial
	var trimmed time.Time
	trim := func() {
		if time.Since(trimmed) >= n.opts.TrimEvery {
			ep.queued.Store(int64(n.trim(main, ep) + n.trim(pulls, ep)))
			trimmed = time.Now()
		}
	}
	fail := func() bool {
		for left := backoff; left > 0; left -= min(left, n.opts.TrimEvery) {
			if !sleep(ctx, min(left, n.opts.TrimEvery), nil) {
				return false
			}
			trim()
		}
		backoff = min(2*backoff, ep.BackoffMax)
		return true
	}
	for ctx.Err() == nil {
		trim()
		q := main
		events, err := q.Oldest(batch)
		if err == nil && len(events) == 0 {
			q = pulls
			events, err = q.Oldest(batch)
		}
		if err != nil {
			n.log.Warn("notifications: queue unreadable", "endpoint", ep.Name, "err", err)
			if !fail() {
				return
			}
			continue
		}
		if len(events) == 0 {
			ep.queued.Store(0)
			sleep(ctx, n.opts.Poll, ep.wake)
			continue
		}
		for _, ev := range events {
			if age := n.opts.Now().Sub(idTime(ev.ID)); age > ep.MaxAge {
				if err := q.Remove(ev.ID); err != nil {
					n.log.Warn("notifications: expired event not removed", "endpoint", ep.Name, "event_id", ev.ID, "err", err)
					if !fail() {
						return
					}
					break
				}
				ep.dropped.Add(1)
				n.log.Error("notifications: event dropped, undelivered past max_age", "endpoint", ep.Name,
					"event_id", ev.ID, "age", age.Round(time.Second).String(), "max_age", ep.MaxAge.String())
				continue
			}
			if err := n.send(ctx, ep, ev); err != nil {
				if ctx.Err() != nil {
					return
				}
				ep.failed.Add(1)
				n.log.Warn("notifications: delivery failed; retrying", "endpoint", ep.Name, "event_id", ev.ID,
					"retry_in", backoff.String(), "err", err)
				if !fail() {
					return
				}
				break // read the head again: it may have been trimmed meanwhile
			}
			backoff = ep.BackoffInitial
			ep.sent.Add(1)
			if err := q.Remove(ev.ID); err != nil {
				// It will be delivered again: at least once.
				n.log.Warn("notifications: delivered event not removed from its queue", "endpoint", ep.Name, "event_id", ev.ID, "err", err)
				if !fail() {
					return
				}
				break
			}
		}
	}
}

// trim enforces MaxEvents on a queue, dropping its oldest events; it returns how many
// remain.
func (n *Notifier) trim(q cache.EventQueue, ep *endpoint) int {
	dropped, remain, err := q.Trim(ep.MaxEvents)
	if err != nil {
		n.log.Warn("notifications: queue not trimmed", "endpoint", ep.Name, "err", err)
		return remain
	}
	if len(dropped) > 0 {
		ep.dropped.Add(int64(len(dropped)))
		n.log.Error("notifications: queue over max_events; oldest events dropped", "endpoint", ep.Name,
			"queue", q.Name(), "dropped", len(dropped), "max_events", ep.MaxEvents, "first_dropped", dropped[0], "last_dropped", dropped[len(dropped)-1])
	}
	return remain
}

// maxAnswer bounds what is read of an endpoint's answer.
const maxAnswer = 64 << 10

// send POSTs one event; nil when the endpoint answered 2xx.
func (n *Notifier) send(ctx context.Context, ep *endpoint, ev cache.QueuedEvent) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(ev.Body))
	if err != nil {
		return err
	}
	for name, h := range ep.Headers {
		v := h.Value
		if h.File != "" {
			if v, err = readSecret(h.File); err != nil {
				return fmt.Errorf("header %s: %w", name, err)
			}
		}
		req.Header.Set(name, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dockyard")
	req.Header.Set(EventIDHeader, ev.ID)
	if ep.SecretFile != "" {
		key, err := readSecret(ep.SecretFile)
		if err != nil {
			return fmt.Errorf("secret_file: %w", err)
		}
		req.Header.Set(SignatureHeader, Sign([]byte(key), ev.Body))
	}
	resp, err := ep.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// The URL's path and query may be its credential (Slack- and Teams-style
			// webhooks): the log names the host only.
			err = fmt.Errorf("POST %s: %w", redactedURL(ep.URL), ue.Err)
		}
		return err
	}
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer)) // let the connection be reused
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("endpoint answered %s: %.200q", resp.Status, answer)
	}
	return nil
}

// redactedURL is raw with its user, path and query left out.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the endpoint"
	}
	return u.Scheme + "://" + u.Host + "/…"
}

// Sign is the signature header's value for body: "sha256=" and the hex HMAC-SHA256
// of the exact body bytes under key.
func Sign(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature (the header's value) signs body under key.
func Verify(key, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(key, body)), []byte(signature))
}

// readSecret reads a file, without the line end an editor adds.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", errors.New(path + " is empty")
	}
	return s, nil
}

// sleep waits d, or until wake (nil: never); false when ctx ended.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-t.C:
	}
	return true
}
