package lifecycle_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/lifecycle"
	"github.com/dockyard/dockyard/vhost"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type registry struct {
	t     *testing.T
	addr  string
	store *cache.Store
}

func start(t *testing.T, clk *clock, im *lifecycle.Immutability) *registry {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := cache.Open(cache.Options{Dir: t.TempDir(), Logger: log, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	opts := vhost.HostedOptions{}
	if im != nil {
		opts.Immutable = func(repo, tag string) (string, bool, bool) {
			i := im.Rule("dev", repo, tag)
			return fmt.Sprintf("lifecycle.immutable[%d]", i), i >= 0, i >= 0 && im.Rules[i].AllowDelete
		}
	}
	dev := vhost.NewHosted("dev", store, opts)
	router, _ := vhost.NewRouter([]vhost.Registry{dev}, []vhost.Route{{Host: "*", Registry: "dev"}})
	gw := gateway.New(gateway.Options{Router: router, Logger: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gw.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gw.Shutdown(ctx)
		store.Close()
	})
	return &registry{t: t, addr: ln.Addr().String(), store: store}
}

func (r *registry) do(method, path string, body []byte, ctype string) (int, []byte) {
	r.t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.addr+path, strings.NewReader(string(body)))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// push stores a one-layer image whose content is unique to tag and variant.
func (r *registry) push(repo, tag, variant string) (int, []byte) {
	id := tag // distinct content per tag, or per variant when one is given
	if variant != "" {
		id = variant
	}
	config := []byte(fmt.Sprintf(`{"content":%q}`, id))
	layer := []byte("layer of " + id)
	for _, b := range [][]byte{config, layer} {
		if st, body := r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest(b), b, "application/octet-stream"); st != 201 {
			r.t.Fatalf("blob: %d %s", st, body)
		}
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		digest(config), len(config), digest(layer), len(layer))
	return r.do("PUT", "/v2/"+repo+"/manifests/"+tag, []byte(m), "application/vnd.oci.image.manifest.v1+json")
}

var releases = strings.Fields(`1.0.0 1.0.1 1.1.0 1.2.0 1.2.1 2.0.0 2.1.0 2.1.1 2.2.0 3.0.0 3.0.1 3.1.0 3.2.0 3.2.1
	4.0.0 4.1.0 4.1.1 4.1.2 5.0.0 5.0.1 5.1.0 5.2.0 5.2.1 5.3.0 6.0.0 6.1.0 6.1.1 6.2.0
	7.0.0 7.0.1 7.1.0 7.1.1 7.1.2 7.2.0 7.2.1 7.2.2 7.2.3 v7.3.0`)
var others = strings.Fields(`6.2.0-RC1 7.3.0-RC1 7.4.0-rc.1 8.0.0-RC2 7.2.0-SNAPSHOT-1 7.4.0-SNAPSHOT-1 7.4.0-SNAPSHOT-2 latest main`)

// pushAll pushes the scenario, one tag a minute, and returns every tag.
func pushAll(t *testing.T, r *registry, clk *clock) []string {
	all := append(append([]string{}, releases...), others...)
	for _, tag := range all {
		clk.Advance(time.Minute)
		if st, body := r.push("app/svc", tag, ""); st != 201 {
			t.Fatalf("push %s: %d %s", tag, st, body)
		}
	}
	return all
}

func kept(plan []lifecycle.Decision) []string {
	var out []string
	for _, d := range plan {
		if d.Keep {
			out = append(out, d.Tag)
		}
	}
	slices.Sort(out)
	return out
}

func TestRetentionScenarios(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := start(t, clk, nil)
	all := pushAll(t, r, clk)
	if len(releases) < 38 {
		t.Fatal("scenario too small")
	}
	classes := lifecycle.DefaultClasses()
	engine := func(p lifecycle.Policy) *lifecycle.Engine {
		p.Registries, p.Repositories = []string{"dev"}, []string{"app/**"}
		return &lifecycle.Engine{Store: r.store, Registries: []string{"dev"}, Policies: []lifecycle.Policy{p}, Classes: classes, Now: clk.Now}
	}
	ctx := context.Background()
	cases := []struct {
		name   string
		policy lifecycle.Policy
		want   string
	}{
		{"semver 3 majors, 2 minors, 2 patches; RCs and snapshots until released; latest", lifecycle.Policy{Rules: []lifecycle.Rule{
			lifecycle.Semver{Majors: 3, Minors: 2, Patches: 2},
			lifecycle.Candidates{DropReleased: true},
			lifecycle.Snapshots{PerVersion: 1, DropReleased: true},
			lifecycle.Patterns{Patterns: []*regexp.Regexp{regexp.MustCompile(`^latest$`)}},
		}}, "5.3.0 6.2.0 7.2.2 7.2.3 7.4.0-SNAPSHOT-2 7.4.0-rc.1 8.0.0-RC2 latest v7.3.0"},
		{"semver 2 majors, all patches of the newest minor", lifecycle.Policy{Rules: []lifecycle.Rule{
			lifecycle.Semver{Majors: 2, Minors: 1, Patches: -1},
		}}, "6.2.0 v7.3.0"},
		{"semver 1 major, 3 minors, all patches", lifecycle.Policy{Rules: []lifecycle.Rule{
			lifecycle.Semver{Majors: 1, Minors: 3, Patches: -1},
		}}, "7.1.0 7.1.1 7.1.2 7.2.0 7.2.1 7.2.2 7.2.3 v7.3.0"},
		{"keep the last 3 pushed", lifecycle.Policy{Rules: []lifecycle.Rule{lifecycle.KeepLast{Count: 3}}},
			"7.4.0-SNAPSHOT-2 latest main"},
		{"snapshots kept even once released, 2 per version", lifecycle.Policy{Rules: []lifecycle.Rule{
			lifecycle.Snapshots{PerVersion: 2, DropReleased: false},
		}}, "7.2.0-SNAPSHOT-1 7.4.0-SNAPSHOT-1 7.4.0-SNAPSHOT-2"},
	}
	for _, c := range cases {
		plan, err := engine(c.policy).Plan(ctx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if len(plan) != len(all) {
			t.Fatalf("%s: plan has %d tags, want %d", c.name, len(plan), len(all))
		}
		if got := strings.Join(kept(plan), " "); got != c.want {
			t.Errorf("%s:\n got  %s\n want %s", c.name, got, c.want)
		}
	}

	// Pull times from the injected clock: two months on, tags pulled in the last 30 days
	// stay.
	clk.Advance(60 * 24 * time.Hour)
	for _, tag := range []string{"1.0.0", "4.1.1"} {
		if st, _ := r.do("GET", "/v2/app/svc/manifests/"+tag, nil, ""); st != 200 {
			t.Fatalf("pull %s: %d", tag, st)
		}
	}
	clk.Advance(24 * time.Hour)
	pulled := engine(lifecycle.Policy{Rules: []lifecycle.Rule{lifecycle.PulledWithin{Window: 30 * 24 * time.Hour}, lifecycle.PushedWithin{Window: 7 * 24 * time.Hour}}})
	plan, _ := pulled.Plan(ctx, "", "")
	if got := strings.Join(kept(plan), " "); got != "1.0.0 4.1.1" {
		t.Errorf("pulled within 30 days: %s", got)
	}
	for _, d := range plan {
		if d.Tag == "1.0.0" && d.Reason != "kept by pulled_within" {
			t.Errorf("1.0.0 reason: %q", d.Reason)
		}
		if d.Tag == "2.0.0" && (d.Keep || d.Reason != "no rule keeps it") {
			t.Errorf("2.0.0: %+v", d)
		}
	}

	// Apply the first policy: kept tags pull, deleted ones are unknown.
	e := engine(cases[0].policy)
	e.Policies[0].UntaggedGrace = time.Nanosecond
	plan, _ = e.Plan(ctx, "", "")
	res, err := e.Apply(ctx, plan, "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.TagsDeleted != len(all)-9 || res.GarbageCollected.Blobs == 0 {
		t.Errorf("apply: %+v", res)
	}
	keep := kept(plan)
	for _, tag := range all {
		st, body := r.do("GET", "/v2/app/svc/manifests/"+tag, nil, "")
		switch want := slices.Contains(keep, tag); {
		case want && st != 200:
			t.Errorf("kept %s: %d", tag, st)
		case !want && (st != 404 || !strings.Contains(string(body), "MANIFEST_UNKNOWN")):
			t.Errorf("deleted %s: %d %s", tag, st, body)
		}
	}
	var tl struct{ Tags []string }
	_, body := r.do("GET", "/v2/app/svc/tags/list", nil, "")
	json.Unmarshal(body, &tl)
	if strings.Join(tl.Tags, " ") != strings.Join(keep, " ") {
		t.Errorf("tags after apply: %v", tl.Tags)
	}
}

func TestImmutableReleases(t *testing.T) {
	clk := &clock{now: time.Now()}
	im := &lifecycle.Immutability{Classes: lifecycle.DefaultClasses(), Rules: []lifecycle.ImmutableRule{
		{Registries: []string{"dev"}, Repositories: []string{"app/**"}},
	}}
	r := start(t, clk, im)
	if st, body := r.push("app/x", "1.0.0", "a"); st != 201 {
		t.Fatalf("first push: %d %s", st, body)
	}
	st, body := r.push("app/x", "1.0.0", "b")
	if st != 403 || !strings.Contains(string(body), "DENIED") || !strings.Contains(string(body), "1.0.0") || !strings.Contains(string(body), "lifecycle.immutable[0]") {
		t.Errorf("overwrite of a release: %d %s", st, body)
	}
	if st, body := r.push("app/x", "1.0.0", "a"); st != 201 {
		t.Errorf("the same bytes again: %d %s", st, body)
	}
	for _, tag := range []string{"1.1.0-SNAPSHOT", "1.1.0-RC1", "latest"} {
		r.push("app/x", tag, "a")
		if st, body := r.push("app/x", tag, "b"); st != 201 {
			t.Errorf("re-push of mutable %s: %d %s", tag, st, body)
		}
	}
	if st, body := r.do("DELETE", "/v2/app/x/manifests/1.0.0", nil, ""); st != 403 || !strings.Contains(string(body), "DENIED") {
		t.Errorf("delete of a protected tag: %d %s", st, body)
	}
	// A platform manifest of a protected multi-platform release is protected with it.
	if st, body := r.push("app/x", "2.0.0-SNAPSHOT", "platform"); st != 201 {
		t.Fatalf("child: %d %s", st, body)
	}
	_, m := r.do("GET", "/v2/app/x/manifests/2.0.0-SNAPSHOT", nil, "")
	child := digest(m)
	idx := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}]}`, child)
	if st, body := r.do("PUT", "/v2/app/x/manifests/2.0.0", []byte(idx), "application/vnd.oci.image.index.v1+json"); st != 201 {
		t.Fatalf("index: %d %s", st, body)
	}
	if st, body := r.do("DELETE", "/v2/app/x/manifests/"+child, nil, ""); st != 403 || !strings.Contains(string(body), "2.0.0") {
		t.Errorf("delete of a manifest a protected release lists: %d %s", st, body)
	}
	// Its blobs too: unlinking a layer of a release would break its pulls.
	if st, body := r.do("DELETE", "/v2/app/x/blobs/"+digest([]byte("layer of a")), nil, ""); st != 403 || !strings.Contains(string(body), "1.0.0") {
		t.Errorf("delete of a layer of a protected release: %d %s", st, body)
	}
	if st, body := r.do("DELETE", "/v2/app/x/blobs/"+digest([]byte("layer of platform")), nil, ""); st != 403 || !strings.Contains(string(body), "2.0.0") {
		t.Errorf("delete of a layer of a manifest a protected index lists: %d %s", st, body)
	}
	r.push("app/x", "3.0.0-SNAPSHOT", "loose")
	if st, body := r.do("DELETE", "/v2/app/x/blobs/"+digest([]byte("layer of loose")), nil, ""); st != 202 {
		t.Errorf("delete of a snapshot's layer: %d %s, want 202", st, body)
	}
	if st, _ := r.push("other/x", "1.0.0", "a"); st != 201 {
		t.Fatal("push outside the rule")
	}
	if st, _ := r.push("other/x", "1.0.0", "b"); st != 201 {
		t.Errorf("releases outside the rule stay mutable: %d", st)
	}
}

// A tag's push time is its own, not its manifest's: retagging an old manifest makes only
// the new tag recent. And pruning untagged manifests stays inside the policy's
// repositories.
func TestTagPushTimesAndPruningScope(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := start(t, clk, nil)
	r.push("app/a", "2.1.0", "same")
	clk.Advance(time.Hour)
	r.push("app/a", "latest", "same") // the same manifest, tagged later
	clk.Advance(time.Hour)
	for _, repo := range []string{"other/b", "app/a"} {
		if st, body := r.push(repo, "gone", repo); st != 201 {
			t.Fatalf("push: %d %s", st, body)
		}
		// Each repository now holds an untagged manifest; only app/a's is in scope.
		if st, body := r.do("DELETE", "/v2/"+repo+"/manifests/gone", nil, ""); st != 202 {
			t.Fatalf("untag %s: %d %s", repo, st, body)
		}
	}
	clk.Advance(time.Minute) // past the untagged grace
	e := &lifecycle.Engine{Store: r.store, Registries: []string{"dev"}, Classes: lifecycle.DefaultClasses(), Now: clk.Now,
		Policies: []lifecycle.Policy{{Name: "p", Registries: []string{"dev"}, Repositories: []string{"app/**"},
			Rules: []lifecycle.Rule{lifecycle.KeepLast{Count: 1}}, UntaggedGrace: time.Nanosecond}}}
	ctx := context.Background()
	plan, err := e.Plan(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(kept(plan), " "); got != "latest" {
		t.Errorf("keep_last 1 keeps %q, want the most recently pushed tag", got)
	}
	res, err := e.Apply(ctx, plan, "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.UntaggedDeleted != 1 {
		t.Errorf("pruned %d untagged manifests, want 1: app/a's, not other/b's", res.UntaggedDeleted)
	}
	for repo, want := range map[string]int{"app/a": 0, "other/b": 1} {
		// A dry run counts what is left to prune.
		n, err := r.store.PruneUntagged(ctx, "dev", func(r string) bool { return r == repo }, time.Nanosecond, true)
		if err != nil || n != want {
			t.Errorf("%s holds %d untagged manifests after apply (%v), want %d", repo, n, err, want)
		}
	}
}

// Apply acts on what the plan saw: a tag pushed again between planning and applying —
// to new content or to the same — is kept, and said to be.
func TestApplyKeepsTagsPushedAfterPlanning(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := start(t, clk, nil)
	for _, tag := range []string{"1.0", "1.1", "1.2", "2.0"} {
		clk.Advance(time.Minute)
		if st, body := r.push("app/a", tag, ""); st != 201 {
			t.Fatalf("push %s: %d %s", tag, st, body)
		}
	}
	e := &lifecycle.Engine{Store: r.store, Registries: []string{"dev"}, Classes: lifecycle.DefaultClasses(), Now: clk.Now,
		Policies: []lifecycle.Policy{{Name: "p", Registries: []string{"dev"}, Repositories: []string{"app/**"},
			Rules: []lifecycle.Rule{lifecycle.KeepLast{Count: 1}}}}}
	ctx := context.Background()
	plan, err := e.Plan(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(kept(plan), " "); got != "2.0" {
		t.Fatalf("plan keeps %q", got)
	}
	clk.Advance(time.Minute)
	r.push("app/a", "1.0", "new content") // moved
	r.push("app/a", "1.1", "")            // the same content, pushed again
	res, err := e.Apply(ctx, plan, "", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if res.TagsDeleted != 1 || res.TagsChanged != 2 {
		t.Errorf("deleted %d, kept as changed %d; want 1 (1.2) and 2 (1.0, 1.1)", res.TagsDeleted, res.TagsChanged)
	}
	for tag, want := range map[string]int{"1.0": 200, "1.1": 200, "1.2": 404, "2.0": 200} {
		if st, _ := r.do("GET", "/v2/app/a/manifests/"+tag, nil, ""); st != want {
			t.Errorf("%s after apply: %d, want %d", tag, st, want)
		}
	}
}

// Concurrent pushes of different manifests to one new immutable release tag: exactly
// one wins, every other gets 403, and the tag names the winner. Pushes of the same
// bytes all succeed.
func TestConcurrentPushesCannotRacePastAnImmutableRelease(t *testing.T) {
	clk := &clock{now: time.Now()}
	im := &lifecycle.Immutability{Classes: lifecycle.DefaultClasses(), Rules: []lifecycle.ImmutableRule{
		{Registries: []string{"dev"}, Repositories: []string{"app/**"}},
	}}
	r := start(t, clk, im)
	const pushers = 16
	var wg sync.WaitGroup
	statuses := make([]int, pushers)
	for i := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _ = r.push("app/race", "3.0.0", fmt.Sprint("variant ", i))
		}()
	}
	wg.Wait()
	won := -1
	for i, st := range statuses {
		switch st {
		case 201:
			if won >= 0 {
				t.Errorf("pushes %d and %d both set the immutable tag", won, i)
			}
			won = i
		case 403:
		default:
			t.Errorf("push %d: %d", i, st)
		}
	}
	if won < 0 {
		t.Fatal("no push won")
	}
	// The tag names the winner's content.
	_, m := r.do("GET", "/v2/app/race/manifests/3.0.0", nil, "")
	st, winner := r.push("app/race", "3.0.0", fmt.Sprint("variant ", won)) // same bytes again
	_, again := r.do("GET", "/v2/app/race/manifests/3.0.0", nil, "")
	if st != 201 || string(m) != string(again) {
		t.Errorf("re-push of the winner: %d %s; tag changed: %v", st, winner, string(m) != string(again))
	}
	for i := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _ = r.push("app/race", "3.1.0", "the same bytes")
		}()
	}
	wg.Wait()
	for i, st := range statuses {
		if st != 201 {
			t.Errorf("concurrent push %d of the same bytes: %d", i, st)
		}
	}
}
