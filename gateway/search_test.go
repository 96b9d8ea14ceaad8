package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/index/pgtest"
	"github.com/dockyard/dockyard/lifecycle"
	"github.com/dockyard/dockyard/vhost"
)

// searchTag is one tag the search fixture pushed, as the test knows it.
type searchTag struct {
	registry, repo, tag, class, team string
	pushedAt                         time.Time
	pulled                           bool
}

type searchFixture struct {
	r    *testRegistry
	tags []searchTag // in the order search answers: registry (dev, prod), repository, tag
	// t0: the first half of each repository's tags was pushed then, t1 the second;
	// pulls happened at t2.
	t0, t1, t2 time.Time
}

// newSearchFixture pushes a few thousand tags: 20 repositories across two hosted
// registries grouped as "all" (the registry of every host), each with releases,
// release candidates, snapshots, other tags and a labelled configuration; the first
// repository has a two-platform index too. Some tags are pulled.
func newSearchFixture(t *testing.T, indexKind string) *searchFixture {
	f := &searchFixture{t0: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	f.t1, f.t2 = f.t0.Add(time.Hour), f.t0.Add(2*time.Hour)
	var now atomic.Pointer[time.Time]
	now.Store(&f.t0)
	classes := lifecycle.DefaultClasses()
	f.r = startRegistry(t, t.TempDir(), registryOptions{
		store: func(o *cache.Options) {
			o.Now = func() time.Time { return *now.Load() }
			if indexKind == "postgres" {
				db, err := index.OpenPostgres(context.Background(), index.PostgresOptions{DSN: pgtest.Need(t, pgserver).NewDatabase(t)})
				if err != nil {
					t.Fatal(err)
				}
				o.Index = db
			}
		},
		registries: func(store *cache.Store) ([]vhost.Registry, []vhost.Route) {
			dev := vhost.NewHosted("dev", store, vhost.HostedOptions{})
			prod := vhost.NewHosted("prod", store, vhost.HostedOptions{})
			all := vhost.NewGroup("all", []vhost.Registry{dev, prod}, dev, nil)
			return []vhost.Registry{dev, prod, all}, []vhost.Route{{Host: "*", Registry: "all"},
				{Host: "prod.test", Registry: "prod"}}
		},
		gateway: func(o *gateway.Options) { o.Classify = func(tag string) string { return string(classes.Of(tag)) } },
	})
	r := f.r
	for i := range 20 {
		reg, host, repo, team := "dev", "", fmt.Sprintf("team-a/app-%02d", i), "a"
		if i >= 10 {
			reg, host, repo, team = "prod", "prod.test", fmt.Sprintf("team-b/svc-%02d", i), "b"
		}
		config := fmt.Appendf(nil, `{"architecture":"amd64","os":"linux","config":{"Labels":{"team":%q,"org.opencontainers.image.description":"image %d"}},"rootfs":{"type":"layers","diff_ids":[]}}`, team, i)
		layer := fmt.Appendf(nil, "layer %d", i)
		r.headers = []string{"Host", host}
		r.pushBlob(repo, config)
		r.pushBlob(repo, layer)
		m := imageManifest(config, layer)
		var names []string
		for n := range 37 {
			names = append(names, fmt.Sprintf("1.0.%d", n), fmt.Sprintf("1.0.%d-RC1", n), fmt.Sprintf("1.1.%d-SNAPSHOT", n), fmt.Sprintf("feature-%d", n))
		}
		names = append(names, "latest")
		slices.Sort(names)
		for half, at := range []time.Time{f.t0, f.t1} {
			now.Store(&at)
			part := names[:len(names)/2]
			if half == 1 {
				part = names[len(names)/2:]
			}
			q := url.Values{"tag": part}
			if resp := r.do("PUT", "/v2/"+repo+"/manifests/"+sha256Of(m)+"?"+q.Encode(), m, "Content-Type", mtOCIManifest); resp.StatusCode != http.StatusCreated {
				t.Fatalf("push %s: %d %s", repo, resp.StatusCode, resp.body)
			}
			for _, tag := range part {
				f.tags = append(f.tags, searchTag{registry: reg, repo: repo, tag: tag, class: string(classes.Of(tag)), team: team, pushedAt: at})
			}
		}
	}
	// Pull a few tags at t2: the 1.0.1x releases of the first repository of each team.
	now.Store(&f.t2)
	for i := range f.tags {
		st := &f.tags[i]
		if (st.repo == "team-a/app-00" || st.repo == "team-b/svc-10") && strings.HasPrefix(st.tag, "1.0.1") && st.class == "release" {
			host := ""
			if st.registry == "prod" {
				host = "prod.test"
			}
			r.headers = []string{"Host", host}
			if resp := r.do("GET", "/v2/"+st.repo+"/manifests/"+st.tag, nil); resp.StatusCode != 200 {
				t.Fatalf("pull: %d", resp.StatusCode)
			}
			st.pulled = true
		}
	}
	r.headers = nil
	if err := r.store.FlushAccess(); err != nil {
		t.Fatal(err)
	}
	return f
}

type searchResult struct {
	Registry     string            `json:"registry"`
	Repository   string            `json:"repository"`
	Tag          string            `json:"tag"`
	Class        string            `json:"class"`
	Digest       string            `json:"digest"`
	MediaType    string            `json:"media_type"`
	Size         int64             `json:"size"`
	Platforms    []string          `json:"platforms"`
	ArtifactType string            `json:"artifact_type"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	PushedAt     time.Time         `json:"pushed_at"`
	LastPulled   *time.Time        `json:"last_pulled"`
	PullCount    int64             `json:"pull_count"`
}

type searchPage struct {
	Kind    string         `json:"kind"`
	Results []searchResult `json:"results"`
	Next    string         `json:"next"`
}

// searchAll follows the pages of a search and returns every result and the number
// of pages.
func (r *testRegistry) searchAll(t *testing.T, query url.Values, headers ...string) ([]searchResult, int) {
	t.Helper()
	var out []searchResult
	pages := 0
	for {
		resp := r.do("GET", "/-/api/v1/search?"+query.Encode(), nil, headers...)
		if resp.StatusCode != 200 {
			t.Fatalf("search %s: %d %s", query.Encode(), resp.StatusCode, resp.body)
		}
		var p searchPage
		if err := json.Unmarshal(resp.body, &p); err != nil {
			t.Fatal(err)
		}
		pages++
		out = append(out, p.Results...)
		if p.Next == "" {
			if resp.Header.Get("Link") != "" {
				t.Errorf("the last page has a Link header: %s", resp.Header.Get("Link"))
			}
			return out, pages
		}
		if !strings.Contains(resp.Header.Get("Link"), url.QueryEscape(p.Next)) {
			t.Errorf("Link header %q does not lead to cursor %s", resp.Header.Get("Link"), p.Next)
		}
		if pages > 10_000 {
			t.Fatal("search never ends")
		}
		query = cloneValues(query)
		query.Set("cursor", p.Next)
	}
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

func TestSearchFilters(t *testing.T) {
	for _, kind := range []string{"badger", "postgres"} {
		t.Run(kind, func(t *testing.T) { testSearchFilters(t, kind) })
	}
}

func testSearchFilters(t *testing.T, indexKind string) {
	t0 := time.Now()
	f := newSearchFixture(t, indexKind)
	t.Logf("fixture: %s", time.Since(t0))
	if len(f.tags) < 2000 {
		t.Fatalf("the fixture has %d tags", len(f.tags))
	}
	after := f.t0.Add(30 * time.Minute)
	cases := []struct {
		name  string
		query url.Values
		want  func(searchTag) bool
	}{
		{"everything", url.Values{}, func(searchTag) bool { return true }},
		{"q: part of a repository name", url.Values{"q": {"SVC-13"}}, func(s searchTag) bool { return s.repo == "team-b/svc-13" }},
		{"q: part of a tag, any case", url.Values{"q": {"snapshot"}}, func(s searchTag) bool { return s.class == "snapshot" }},
		{"q: repository and tag", url.Values{"q": {"app-02:1.0.3"}}, func(s searchTag) bool {
			return s.repo == "team-a/app-02" && strings.HasPrefix(s.tag, "1.0.3")
		}},
		{"registry", url.Values{"registry": {"prod"}}, func(s searchTag) bool { return s.registry == "prod" }},
		{"repository glob", url.Values{"repository": {"team-a/*"}}, func(s searchTag) bool { return strings.HasPrefix(s.repo, "team-a/") }},
		{"tag pattern", url.Values{"tag": {"1.0.2?"}}, func(s searchTag) bool { m, _ := path.Match("1.0.2?", s.tag); return m }},
		{"class release", url.Values{"class": {"release"}}, func(s searchTag) bool { return s.class == "release" }},
		{"class rc", url.Values{"class": {"rc"}}, func(s searchTag) bool { return s.class == "rc" }},
		{"class other", url.Values{"class": {"other"}}, func(s searchTag) bool { return s.class == "other" }},
		{"pushed after", url.Values{"pushed_after": {after.Format(time.RFC3339)}}, func(s searchTag) bool { return s.pushedAt.After(after) }},
		{"pulled before", url.Values{"pulled_before": {f.t2.Format(time.RFC3339)}}, func(s searchTag) bool { return !s.pulled }},
		{"pulled before (all)", url.Values{"pulled_before": {f.t2.Add(time.Second).Format(time.RFC3339)}}, func(searchTag) bool { return true }},
		{"label", url.Values{"label": {"team=b"}}, func(s searchTag) bool { return s.team == "b" }},
		{"label absent", url.Values{"label": {"team=c"}}, func(searchTag) bool { return false }},
		{"combined", url.Values{"registry": {"dev"}, "class": {"release"}, "tag": {"1.0.1*"}, "label": {"team=a"}},
			func(s searchTag) bool {
				m, _ := path.Match("1.0.1*", s.tag)
				return s.registry == "dev" && s.class == "release" && m
			}},
	}
	for _, c := range cases {
		var want []string
		for _, s := range f.tags {
			if c.want(s) {
				want = append(want, s.registry+" "+s.repo+":"+s.tag)
			}
		}
		// The default page, and small pages (a few hundred results, to keep the test
		// short on PostgreSQL) or odd-sized ones.
		small := "7"
		if len(want) > 300 {
			small = "293"
		}
		for _, n := range []string{"", small} {
			q := cloneValues(c.query)
			if n != "" {
				q.Set("n", n)
			}
			results, pages := f.r.searchAll(t, q)
			var got []string
			for _, res := range results {
				got = append(got, res.Registry+" "+res.Repository+":"+res.Tag)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s (n=%q): %d results, want %d\n got %.300v\nwant %.300v", c.name, n, len(got), len(want), got, want)
			}
			if size, _ := strconv.Atoi(n); size > 0 && pages < (len(want)+size-1)/size {
				t.Errorf("%s: %d results in %d pages of %d", c.name, len(got), pages, size)
			}
		}
	}

	// One tag's details, against what was pushed and pulled.
	results, _ := f.r.searchAll(t, url.Values{"repository": {"team-b/svc-10"}, "tag": {"1.0.10"}})
	if len(results) != 1 {
		t.Fatalf("one tag: %d results", len(results))
	}
	got := results[0]
	head := f.r.do("HEAD", "/v2/team-b/svc-10/manifests/1.0.10", nil, "Host", "prod.test", "Accept", mtOCIManifest)
	config := fmt.Appendf(nil, `{"architecture":"amd64","os":"linux","config":{"Labels":{"team":%q,"org.opencontainers.image.description":"image %d"}},"rootfs":{"type":"layers","diff_ids":[]}}`, "b", 10)
	layer := []byte("layer 10")
	wantSize := head.ContentLength + int64(len(config)) + int64(len(layer))
	if got.Digest != head.Header.Get("Docker-Content-Digest") || got.Size != wantSize || got.MediaType != mtOCIManifest ||
		!slices.Equal(got.Platforms, []string{"linux/amd64"}) || got.Labels["team"] != "b" || got.Class != "release" ||
		got.PullCount != 1 || got.LastPulled == nil || !got.LastPulled.Equal(f.t2) || !got.PushedAt.Equal(f.t0) {
		t.Errorf("details: %+v (want digest %s, size %d, pulled once at %s, pushed %s)", got, head.Header.Get("Docker-Content-Digest"), wantSize, f.t2, f.t0)
	}
}

// A search answers only what the caller may pull, as the catalog does, through either
// endpoint and with either kind of credentials.
func TestSearchAnswersOnlyWhatTheCallerMayPull(t *testing.T) {
	for _, mode := range []auth.Mode{auth.ModeBasic, auth.ModeToken} {
		t.Run(string(mode), func(t *testing.T) {
			r := authRegistry(t, mode)
			seed(r, basic("alice", "alice-pw"))
			bob := []string{"Authorization", basic("bob", "bob-pw")}
			if mode == auth.ModeToken {
				bob = []string{"Authorization", "Bearer " + mustToken(t, r, basic("bob", "bob-pw"), "registry:catalog:search")}
			}
			for _, c := range []struct {
				who     string
				headers []string
				want    string
			}{
				{"anonymous", nil, "public/img"},
				// the Docker daemon searching without a login says so with empty Basic credentials
				{"anonymous (empty Basic credentials)", []string{"Authorization", basic("", "")}, "public/img"},
				{"bob", bob, "public/img,team/app"},
			} {
				results, _ := r.searchAll(t, url.Values{}, c.headers...)
				var repos []string
				for _, res := range results {
					repos = append(repos, res.Repository)
				}
				if strings.Join(repos, ",") != c.want {
					t.Errorf("%s: search API found %v, want %s", c.who, repos, c.want)
				}
				resp := r.do("GET", "/v1/search?q=", nil, c.headers...)
				var hub struct {
					NumResults int `json:"num_results"`
					Results    []struct{ Name string }
				}
				json.Unmarshal(resp.body, &hub)
				var names []string
				for _, res := range hub.Results {
					names = append(names, res.Name)
				}
				if resp.StatusCode != 200 || strings.Join(names, ",") != c.want || hub.NumResults != len(names) {
					t.Errorf("%s: /v1/search: %d %s, want %s", c.who, resp.StatusCode, resp.body, c.want)
				}
			}
			if mode == auth.ModeToken {
				// A token for a repository only, without the search scope: asked for one.
				tok := mustToken(t, r, basic("bob", "bob-pw"), "repository:team/app:pull")
				resp := r.do("GET", "/v1/search?q=team", nil, "Authorization", "Bearer "+tok)
				if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `scope="registry:catalog:search"`) {
					t.Errorf("search with a token lacking the scope: %d %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
				}
				// A search token is no catalog token.
				tok = mustToken(t, r, basic("bob", "bob-pw"), "registry:catalog:search")
				if resp := r.do("GET", "/v2/_catalog", nil, "Authorization", "Bearer "+tok); resp.StatusCode != 401 {
					t.Errorf("catalog with a search token: %d", resp.StatusCode)
				}
			}
		})
	}
}

// /v1/search answers in Docker Hub's format, paged by n and page.
func TestDockerSearchFormat(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	for _, repo := range []string{"tools/app-b", "tools/app-a", "other/thing", "tools/app-c"} {
		r.pushImage(repo, "latest", []byte(`{"architecture":"amd64","os":"linux","config":{"Labels":{"org.opencontainers.image.description":"about `+repo+`"}}}`), []byte(repo))
	}
	ping := r.do("GET", "/v1/_ping", nil)
	if ping.StatusCode != 200 || ping.Header.Get("X-Docker-Registry-Standalone") != "true" {
		t.Errorf("/v1/_ping: %d %v", ping.StatusCode, ping.Header)
	}
	resp := r.do("GET", "/v1/search?q=APP&n=2&page=2", nil)
	var got struct {
		NumResults int    `json:"num_results"`
		Query      string `json:"query"`
		Page       int    `json:"page"`
		PageSize   int    `json:"page_size"`
		NumPages   int    `json:"num_pages"`
		Results    []struct {
			Name        string `json:"name"`
			Description string `json:"description"`
		} `json:"results"`
	}
	if err := json.Unmarshal(resp.body, &got); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, resp.body)
	}
	if got.NumResults != 3 || got.Query != "APP" || got.Page != 2 || got.PageSize != 2 || got.NumPages != 2 ||
		len(got.Results) != 1 || got.Results[0].Name != "tools/app-c" || got.Results[0].Description != "about tools/app-c" {
		t.Errorf("page 2 of 2: %s", resp.body)
	}
}

// Malformed search parameters are OCI errors, never a 500 or a silent default.
func TestSearchRejectsBadParameters(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	r.pushImage("a/b", "1.0.0", []byte(`{}`), []byte("l"))
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/-/api/v1/search?n=abc", 400},
		{"GET", "/-/api/v1/search?n=0", 400},
		{"GET", "/-/api/v1/search?class=bogus", 400},
		{"GET", "/-/api/v1/search?cursor=%21%21", 400},
		{"GET", "/-/api/v1/search?cursor=eyJnIjoibm9wZSIsInIiOiJhIn0", 400}, // a registry this search does not cover
		{"GET", "/-/api/v1/search?tag=%5B", 400},
		{"GET", "/-/api/v1/search?label=novalue", 400},
		{"GET", "/-/api/v1/search?pushed_after=yesterday", 400},
		{"GET", "/-/api/v1/search?kind=blobs", 400},
		{"GET", "/-/api/v1/search?registry=nope", 404},
		{"GET", "/-/api/v1/search?bogus=1", 400},
		{"POST", "/-/api/v1/search", 405},
		{"GET", "/v1/search?n=-1", 400},
		{"DELETE", "/v1/search", 405},
	} {
		resp := r.do(c.method, c.path, nil)
		if resp.StatusCode != c.status || !strings.Contains(string(resp.body), `"errors"`) {
			t.Errorf("%s %s: %d %s, want %d with an OCI error", c.method, c.path, resp.StatusCode, resp.body, c.status)
		}
	}
	// kind=repositories: names, tag counts and last pushes.
	resp := r.do("GET", "/-/api/v1/search?kind=repositories", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(resp.body), `"repository":"a/b","tags":1`) {
		t.Errorf("kind=repositories: %d %s", resp.StatusCode, resp.body)
	}
}
