package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/dockyard/dockyard/config"
	"github.com/dockyard/dockyard/index/pgtest"
	"github.com/dockyard/dockyard/notify"
)

// The check: with the receiver down, images are pushed, pulled and deleted,
// a retention policy deletes a tag, and dockyard is restarted meanwhile (and takes
// another push); once the receiver is back, every event arrives, each with a valid
// signature and an id that tells duplicates apart. On the embedded index and on
// PostgreSQL.
func TestWebhooksReachAReceiverThatWasDownAcrossARestart(t *testing.T) {
	t.Run("badger", func(t *testing.T) { webhooksAcrossARestart(t, "") })
	t.Run("postgres", func(t *testing.T) {
		t.Setenv("WEBHOOK_TEST_DSN", pgtest.Need(t, pgserver).NewDatabase(t))
		webhooksAcrossARestart(t, "index: {driver: postgres, postgres: {dsn_env: WEBHOOK_TEST_DSN}}\n")
	})
}

func webhooksAcrossARestart(t *testing.T, extra string) {
	dir := t.TempDir()
	secret := []byte("hook-secret")
	os.WriteFile(filepath.Join(dir, "secret"), append(secret, '\n'), 0o600)
	os.WriteFile(filepath.Join(dir, "token"), []byte("Bearer t0ken\n"), 0o600)

	// The receiver's address, with nothing listening there yet: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hook := l.Addr().String()
	l.Close()

	cfg := filepath.Join(dir, "dockyard.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
log: {access: false}
notifications:
  - name: ci
    url: http://%s/hook
    events: [push, delete, pull, retention]
    repositories: ["team/**"]
    headers: {Authorization: {file: token}}
    secret_file: secret
    backoff_initial: 20ms
    backoff_max: 200ms
lifecycle:
  retention:
    - {name: trim, registries: [default], repositories: [team/old], keep_last: 1}
`, hook)+extra), 0o600)
	data := filepath.Join(dir, "data")

	addr, a, stop := serveApp(t, cfg, data)
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(addr+"/"+s, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	pushImage := func(s string) {
		img, _ := random.Image(512, 1)
		if err := remote.Write(ref(s), img); err != nil {
			t.Fatalf("push %s: %v", s, err)
		}
	}
	pushImage("team/app:1")
	pushImage("team/app:2")
	pushImage("team/old:a")
	pushImage("team/old:b")
	pushImage("other/app:1") // no endpoint wants it
	if _, err := remote.Get(ref("team/app:1")); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(ref("team/app:2")); err != nil {
		t.Fatal(err)
	}
	if r, err := a.jobs.Retention(t.Context(), "trim"); err != nil || r.TagsDeleted != 1 {
		t.Fatalf("retention: %+v %v", r, err)
	}
	stop()

	addr, _, stop = serveApp(t, cfg, data) // restarted on the same data
	defer stop()
	pushImage("team/app:3")
	time.Sleep(300 * time.Millisecond) // a few refused attempts

	type got struct {
		event notify.Event
		valid bool
	}
	var mu sync.Mutex
	var deliveries []got
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var e notify.Event
		json.Unmarshal(body, &e)
		m := hmac.New(sha256.New, secret) // as a receiver checks it
		m.Write(body)
		valid := r.Header.Get(notify.SignatureHeader) == "sha256="+hex.EncodeToString(m.Sum(nil)) &&
			r.Header.Get("Authorization") == "Bearer t0ken" && r.Header.Get(notify.EventIDHeader) == e.ID
		mu.Lock()
		deliveries = append(deliveries, got{e, valid})
		mu.Unlock()
	})}
	l, err = net.Listen("tcp", hook)
	if err != nil {
		t.Fatalf("the receiver comes back: %v", err)
	}
	go srv.Serve(l)
	defer srv.Close()

	want := []string{"delete team/app 2", "pull team/app 1", "push team/app 1", "push team/app 2", "push team/app 3",
		"push team/old a", "push team/old b", "retention team/old a"}
	var seen []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		ids := map[string]bool{}
		seen = seen[:0]
		for _, d := range deliveries {
			if !d.valid {
				t.Fatalf("a delivery without a valid signature or headers: %+v", d.event)
			}
			if !ids[d.event.ID] { // at least once: duplicates are told apart by id
				ids[d.event.ID] = true
				seen = append(seen, fmt.Sprintf("%s %s %s", d.event.Action, d.event.Repository, d.event.Tag))
			}
		}
		mu.Unlock()
		sort.Strings(seen)
		if len(seen) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Equal(seen, want) {
		t.Errorf("events received:\n  %v\nwant:\n  %v", seen, want)
	}
	mu.Lock()
	for _, d := range deliveries {
		if e := d.event; e.Action == notify.Push && (e.Digest == "" || e.MediaType == "" || e.Size == 0 || e.Registry != "default") {
			t.Errorf("push event without its manifest: %+v", e)
		}
	}
	mu.Unlock()

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`dockyard_notifications_sent_total{endpoint="ci"} `, `dockyard_notifications_failed_total{endpoint="ci"} `,
		`dockyard_notifications_dropped_total{endpoint="ci"} 0`, `dockyard_notifications_queued{endpoint="ci"} `} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// A reload leaves the endpoints as they are and names notifications among the
// settings that change only at restart.
func TestNotificationsChangeOnlyAtRestart(t *testing.T) {
	old, changed := &config.Config{}, &config.Config{Notifications: []config.Notification{{Name: "ci", URL: "http://ci"}}}
	if got := restartOnly(old, changed); !slices.Contains(got, "notifications") {
		t.Errorf("restart-only changes %v lack notifications", got)
	}
}
