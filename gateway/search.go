package gateway

import (
	"context"
	"errors"
	"maps"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/vhost"
)

// Search, in two shapes: /v1/search, what `docker search HOST/TERM` asks (Docker
// Hub's format, repositories only), and /-/api/v1/search, tags or repositories with
// their details and filters, in keyset pages. Both search the stored content of the
// Host's registry and answer only what the caller may pull, as the catalog does.

// searchCaller authenticates a search and returns what the caller may see in reg. A
// bearer token must carry registry:catalog:* or registry:catalog:search (what the
// Docker daemon asks for when it searches with a token).
func (g *Gateway) searchCaller(ctx *fasthttp.RequestCtx, reg vhost.Registry) (func(repo string) bool, error) {
	routesHere := g.routedTo(ctx, string(ctx.Host()), reg)
	if g.live(ctx).Auth == nil {
		return routesHere, nil
	}
	who, err := g.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	ae := accessOf(ctx)
	if id := who.identity(); id != nil && !id.Anonymous() {
		ae.user = id.Name
	}
	if c := who.claims; c != nil && !tokenAllows(c, "registry", "catalog", reg.Name(), "", "search") {
		return nil, g.challenge(ctx, "registry:catalog:search", "insufficient_scope", "search needs a registry:catalog:search token")
	}
	id := who.identity()
	return func(repo string) bool {
		return routesHere(repo) && g.live(ctx).Auth.Decide(id, reg.Name(), repo, auth.Pull)
	}, nil
}

// routedTo says whether host routes a repository name to reg: a stored name whose
// first component is one of the host's namespaces (hub/x where hub/ leads to another
// registry) cannot be pulled there under that name, and is not shown.
func (g *Gateway) routedTo(ctx *fasthttp.RequestCtx, host string, reg vhost.Registry) func(repo string) bool {
	router := g.live(ctx).Router
	return func(repo string) bool {
		name, err := oci.ParseRepository(repo)
		if err != nil {
			return false
		}
		res, err := router.Resolve(host, name, "")
		return err == nil && res.Registry.Name() == reg.Name() && string(res.Repo) == repo
	}
}

// v1Ping answers the Docker daemon's probe before a search: a standalone registry,
// which makes it send the user's credentials with the search over HTTPS.
func (g *Gateway) v1Ping(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("X-Docker-Registry-Standalone", "true")
	ctx.SetContentType("application/json")
	ctx.SetBodyString("true")
}

// Docker Hub's page bounds: 25 results unless asked, at most 100.
const (
	defaultDockerPage = 25
	maxDockerPage     = 100
)

// dockerSearch answers GET /v1/search?q=TERM&n=N&page=P: the repositories whose name
// contains TERM, in name order.
func (g *Gateway) dockerSearch(ctx *fasthttp.RequestCtx) error {
	reg, visible, err := g.searchRequest(ctx)
	if err != nil {
		return err
	}
	args := ctx.QueryArgs()
	q := string(args.Peek("q"))
	n, err := intParam(args, "n", defaultDockerPage, 1, maxDockerPage)
	if err != nil {
		return err
	}
	page, err := intParam(args, "page", 1, 1, 1<<20)
	if err != nil {
		return err
	}
	c, cancel := context.WithTimeout(g.life, searchTimeout)
	defer cancel()
	hits, _, err := vhost.MatchRepositories(c, reg, vhost.RepoQuery{Text: q, Visible: visible})
	if err != nil {
		return searchError(err)
	}
	type result struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		StarCount   int    `json:"star_count"`
		IsOfficial  bool   `json:"is_official"`
		IsAutomated bool   `json:"is_automated"`
	}
	results := []result{}
	from := min((page-1)*n, len(hits))
	for _, h := range hits[from:min(from+n, len(hits))] {
		results = append(results, result{Name: h.Repository, Description: clip(vhost.Describe(c, reg, h), maxDescription)})
	}
	return writeJSON(ctx, "application/json", map[string]any{
		"num_results": len(hits), "query": q, "page": page, "page_size": n,
		"num_pages": (len(hits) + n - 1) / n, "results": results,
	})
}

// maxDescription bounds a repository's description in /v1/search (Docker Hub's are
// short, and the CLI shows one line).
const maxDescription = 300

// clip cuts s to at most n bytes, on a character boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// searchRequest checks a search request's method and returns the registry of its host
// and what the caller may see there.
func (g *Gateway) searchRequest(ctx *fasthttp.RequestCtx) (vhost.Registry, func(repo string) bool, error) {
	if !ctx.IsGet() {
		ctx.Response.Header.Set("Allow", "GET")
		return nil, nil, oci.ErrUnsupported.Withf("method %s is not allowed on the search endpoint", ctx.Method())
	}
	reg, err := g.searchRegistry(ctx)
	if err != nil {
		return nil, nil, err
	}
	visible, err := g.searchCaller(ctx, reg)
	return reg, visible, err
}

// searchRegistry is the registry serving the request's host.
func (g *Gateway) searchRegistry(ctx *fasthttp.RequestCtx) (vhost.Registry, error) {
	reg, err := g.live(ctx).Router.ResolveHost(string(ctx.Host()))
	if err != nil {
		return nil, err
	}
	accessOf(ctx).registry = reg.Name()
	return reg, nil
}

const defaultSearchPage = 50

// Bounds of a search's own inputs: glob matching costs grow with a pattern's length
// and, for repository globs, steeply with each "**".
const (
	maxPattern     = 256
	maxDoubleStars = 4
)

// searchTimeout bounds one search request's work (it runs on, detached from a client
// that has gone, otherwise).
const searchTimeout = 10 * time.Second

// searchError says that a search ran out of time, or passes err on.
func searchError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return oci.ErrSearchTimeout.Withf("the search took more than %s: narrow it (q, registry, repository, tag)", searchTimeout)
	}
	return err
}

// apiSearch answers GET /-/api/v1/search: tags (kind=tags, the default) or
// repositories (kind=repositories) selected by q and the filters, a page at a time;
// "next" (and a Link header) leads to the following page.
func (g *Gateway) apiSearch(ctx *fasthttp.RequestCtx) error {
	reg, visible, err := g.searchRequest(ctx)
	if err != nil {
		return err
	}
	args := ctx.QueryArgs()
	for k := range args.All() {
		switch string(k) {
		case "q", "kind", "registry", "repository", "tag", "class", "pushed_after", "pulled_before", "label", "n", "cursor":
		default:
			return oci.ErrQueryInvalid.Withf("unknown search parameter %q", k)
		}
	}
	n, err := intParam(args, "n", defaultSearchPage, 1, vhost.MaxSearchPage)
	if err != nil {
		return err
	}
	if glob := string(args.Peek("repository")); glob != "" {
		if len(glob) > maxPattern || strings.Count(glob, "**") > maxDoubleStars {
			return oci.ErrQueryInvalid.Withf("repository glob: at most %d characters and %d \"**\"", maxPattern, maxDoubleStars)
		}
		may := visible
		visible = func(repo string) bool { return may(repo) && auth.MatchGlob(glob, repo) }
	}
	q, only := string(args.Peek("q")), string(args.Peek("registry"))
	switch kind := string(args.Peek("kind")); kind {
	case "repositories":
		return g.searchRepositories(ctx, reg, vhost.RepoQuery{Text: q, Registry: only, Visible: visible}, n)
	case "", "tags":
	default:
		return oci.ErrQueryInvalid.Withf("kind must be tags or repositories, not %q", kind)
	}
	tq := vhost.TagQuery{Text: q, Registry: only, Tag: string(args.Peek("tag")), Visible: visible,
		Classify: g.live(ctx).Classify, Cursor: string(args.Peek("cursor")), Limit: n}
	if c := string(args.Peek("class")); c != "" {
		switch c {
		case "release", "rc", "snapshot", "other":
			tq.Class = c
		default:
			return oci.ErrQueryInvalid.Withf("class must be release, rc, snapshot or other, not %q", c)
		}
	}
	if tq.PushedAfter, err = timeParam(args, "pushed_after"); err != nil {
		return err
	}
	if tq.PulledBefore, err = timeParam(args, "pulled_before"); err != nil {
		return err
	}
	for _, l := range args.PeekMulti("label") {
		k, v, ok := strings.Cut(string(l), "=")
		if !ok || k == "" {
			return oci.ErrQueryInvalid.Withf("label must be KEY=VALUE, not %q", l)
		}
		if tq.Labels == nil {
			tq.Labels = map[string]string{}
		}
		tq.Labels[k] = v
	}
	if tq.Tag != "" {
		if len(tq.Tag) > maxPattern {
			return oci.ErrQueryInvalid.Withf("tag pattern: at most %d characters", maxPattern)
		}
		if _, err := path.Match(tq.Tag, ""); err != nil {
			return oci.ErrQueryInvalid.Withf("tag pattern %q: %v", tq.Tag, err)
		}
	}
	c, cancel := context.WithTimeout(g.life, searchTimeout)
	defer cancel()
	page, err := vhost.SearchTags(c, reg, tq)
	if err != nil {
		return searchError(err)
	}
	results := make([]tagResult, len(page.Tags))
	for i, t := range page.Tags {
		results[i] = newTagResult(t)
	}
	return g.writeSearchPage(ctx, "tags", results, page.Next)
}

// tagResult is one tag in the search API's answer.
type tagResult struct {
	Registry     string            `json:"registry"`
	Repository   string            `json:"repository"`
	Tag          string            `json:"tag"`
	Class        string            `json:"class,omitempty"`
	Digest       string            `json:"digest"`
	MediaType    string            `json:"media_type"`
	Size         int64             `json:"size"`
	Platforms    []string          `json:"platforms"`
	ArtifactType string            `json:"artifact_type,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	PushedAt     time.Time         `json:"pushed_at"`
	LastPulled   *time.Time        `json:"last_pulled,omitempty"`
	PullCount    int64             `json:"pull_count"`
}

// maxMetadata bounds the bytes of labels, and of annotations, one result carries: what
// is past it is left out (and said so under the key "…").
const maxMetadata = 8 << 10

// capped returns m, or the entries of m (in key order) that fit in maxMetadata bytes
// with a marker entry saying how many were left out.
func capped(m map[string]string) map[string]string {
	size := 0
	for k, v := range m {
		size += len(k) + len(v)
	}
	if size <= maxMetadata {
		return m
	}
	keys := slices.Sorted(maps.Keys(m))
	out, used := map[string]string{}, 0
	for _, k := range keys {
		if used+len(k)+len(m[k]) > maxMetadata {
			continue
		}
		used += len(k) + len(m[k])
		out[k] = m[k]
	}
	out["…"] = strconv.Itoa(len(m)-len(out)) + " more left out (over " + strconv.Itoa(maxMetadata) + " bytes)"
	return out
}

func newTagResult(t vhost.TagHit) tagResult {
	r := tagResult{Registry: t.Registry, Repository: t.Repository, Tag: t.Tag, Class: t.Class,
		Digest: string(t.Digest), MediaType: t.MediaType, Size: t.Size, Platforms: t.Platforms,
		ArtifactType: t.ArtifactType, Labels: capped(t.Labels), Annotations: capped(t.Annotations),
		PushedAt: t.PushedAt.UTC(), PullCount: t.Pulls}
	if r.Platforms == nil {
		r.Platforms = []string{}
	}
	if !t.PulledAt.IsZero() {
		at := t.PulledAt.UTC()
		r.LastPulled = &at
	}
	return r
}

// searchRepositories answers kind=repositories: names in order, keyset-paged by name.
func (g *Gateway) searchRepositories(ctx *fasthttp.RequestCtx, reg vhost.Registry, q vhost.RepoQuery, n int) error {
	c, cancel := context.WithTimeout(g.life, searchTimeout)
	defer cancel()
	hits, _, err := vhost.MatchRepositories(c, reg, q)
	if err != nil {
		return searchError(err)
	}
	after := string(ctx.QueryArgs().Peek("cursor"))
	i := 0
	for i < len(hits) && after != "" && hits[i].Repository <= after {
		i++
	}
	hits = hits[i:]
	next := ""
	if len(hits) > n {
		hits = hits[:n]
		next = hits[n-1].Repository
	}
	if err := vhost.CountTags(c, reg, hits); err != nil {
		return searchError(err)
	}
	type repoResult struct {
		Registry   string     `json:"registry"`
		Repository string     `json:"repository"`
		Tags       int        `json:"tags"`
		MoreTags   bool       `json:"tags_counted_partly,omitempty"` // the count stopped at a bound
		LastPush   *time.Time `json:"last_push,omitempty"`
	}
	results := make([]repoResult, len(hits))
	for i, h := range hits {
		results[i] = repoResult{Registry: h.Registry, Repository: h.Repository, Tags: h.Tags, MoreTags: h.Partial}
		if !h.LastPush.IsZero() {
			at := h.LastPush.UTC()
			results[i].LastPush = &at
		}
	}
	return g.writeSearchPage(ctx, "repositories", results, next)
}

// writeSearchPage writes a page of results, with the cursor of the next one in the
// body and in a Link header (the request's query with cursor replaced).
func (g *Gateway) writeSearchPage(ctx *fasthttp.RequestCtx, kind string, results any, next string) error {
	body := map[string]any{"kind": kind, "results": results}
	if next != "" {
		body["next"] = next
		q, _ := url.ParseQuery(string(ctx.QueryArgs().QueryString()))
		q.Set("cursor", next)
		ctx.Response.Header.Set("Link", "<"+string(ctx.Path())+"?"+q.Encode()+`>; rel="next"`)
	}
	return writeJSON(ctx, "application/json", body)
}

// intParam reads an integer query parameter between lo and hi (def when absent).
func intParam(args *fasthttp.Args, name string, def, lo, hi int) (int, error) {
	raw := args.Peek(name)
	if len(raw) == 0 {
		return def, nil
	}
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < lo {
		return 0, oci.ErrPaginationInvalid.Withf("%s must be an integer of at least %d, got %q", name, lo, raw)
	}
	return min(v, hi), nil
}

// timeParam reads a time: RFC 3339 (2026-01-02T15:04:05Z), a date (2026-01-02), or an
// age before now (90m, 36h, 30d).
func timeParam(args *fasthttp.Args, name string) (time.Time, error) {
	raw := string(args.Peek(name))
	if raw == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, raw); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, raw); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(raw, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return time.Now().Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(raw); err == nil && d >= 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, oci.ErrQueryInvalid.Withf("%s must be a time (RFC 3339 or YYYY-MM-DD) or an age (36h, 30d), not %q", name, raw)
}
