package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

// Store is what lifecycle needs of storage.
type Store interface {
	ListRepositories(ctx context.Context, reg, last string, n int) ([]string, bool, error)
	TagInfos(ctx context.Context, reg, repo string) ([]cache.TagInfo, error)
	ManifestGraph(ctx context.Context, reg, repo string, sizes bool) (*cache.ManifestGraph, error)
	DeleteTagIf(ctx context.Context, reg, repo string, tag oci.Tag, d oci.Digest, pushedBefore time.Time) (bool, error)
	PruneUntagged(ctx context.Context, reg string, include func(repo string) bool, grace time.Duration, dryRun bool) (int, error)
	CollectGarbage(ctx context.Context, opts cache.GCOptions) (cache.GCReport, error)
}

// Events hears of what retention did.
type Events interface {
	// TagDeleted is told of a tag deleted by the plan's decision d. An error stops the
	// run (the tag is gone; its event may not have been recorded).
	TagDeleted(d Decision) error
}

// Policy applies retention rules to the repositories of some registries.
type Policy struct {
	Name         string
	Registries   []string // names or "*"
	Repositories []string // globs
	Rules        []Rule
	// UntaggedGrace: untagged manifests no tag reaches go after this (0: left alone).
	UntaggedGrace time.Duration
}

func (p Policy) covers(reg, repo string) bool {
	if !auth.MatchRegistry(p.Registries, reg) {
		return false
	}
	for _, g := range p.Repositories {
		if auth.MatchGlob(g, repo) {
			return true
		}
	}
	return false
}

// Engine plans and applies retention.
type Engine struct {
	Store      Store
	Registries []string // hosted registries retention may touch
	Policies   []Policy
	Classes    Classes
	// Accessories recognises accessory tags (nil: the built-in schemes), which follow
	// their subjects.
	Accessories *oci.Accessories
	Immutable   *Immutability
	Now         func() time.Time
	Log         *slog.Logger
	// Events, when set, is told of every tag Apply deleted (webhooks).
	Events Events
	// Only, when set, restricts planning and applying to the repositories the policy
	// of that name governs (a repository is governed by the first policy covering it,
	// among all of them).
	Only string
}

// Plan lists every tag of the covered repositories with keep or delete and the rule
// that decided. registry and repoGlob narrow it ("" for all).
func (e *Engine) Plan(ctx context.Context, registry, repoGlob string) ([]Decision, error) {
	return e.plan(ctx, registry, repoGlob, false)
}

// PlanSized is Plan with each decision's size (an image's with its accessories'), for
// people to read: it reads every manifest of the repositories it plans (about 3.6 times
// the time of Plan).
func (e *Engine) PlanSized(ctx context.Context, registry, repoGlob string) ([]Decision, error) {
	return e.plan(ctx, registry, repoGlob, true)
}

func (e *Engine) plan(ctx context.Context, registry, repoGlob string, sizes bool) ([]Decision, error) {
	out := []Decision{}
	for _, reg := range e.Registries {
		if registry != "" && reg != registry {
			continue
		}
		repos, _, err := e.Store.ListRepositories(ctx, reg, "", 1<<30)
		if err != nil {
			return nil, err
		}
		for _, repo := range repos {
			if repoGlob != "" && !auth.MatchGlob(repoGlob, repo) {
				continue
			}
			for _, p := range e.Policies {
				if !p.covers(reg, repo) {
					continue
				}
				if e.Only != "" && p.Name != e.Only {
					break // governed by another policy
				}
				infos, err := e.Store.TagInfos(ctx, reg, repo)
				if err != nil {
					return nil, err
				}
				tags := make([]Tag, 0, len(infos))
				var g Graph
				for _, ti := range infos {
					t := e.tag(ti)
					if g == nil && (sizes || t.Subject != "") {
						mg, err := e.Store.ManifestGraph(ctx, reg, repo, sizes)
						if err != nil {
							return nil, err
						}
						g = mg
					}
					tags = append(tags, t)
				}
				protected := func(tag string) bool { return e.Immutable.protects(reg, repo, e.Classes.Of(tag)) }
				for _, d := range Plan(repo, tags, p.Rules, protected, g, p.UntaggedGrace, e.now()) {
					d.Registry, d.Policy = reg, p.Name
					out = append(out, d)
				}
				break // the first policy covering a repository decides it
			}
		}
	}
	return out, nil
}

func (e *Engine) tag(ti cache.TagInfo) Tag {
	t := Tag{Name: ti.Tag, Digest: string(ti.Digest), PushedAt: ti.PushedAt, PulledAt: ti.PulledAt, Class: e.Classes.Of(ti.Tag)}
	if subject, _, ok := e.Accessories.Subject(ti.Tag); ok {
		t.Subject, t.Class = subject, Other
		return t
	}
	if t.Class != Other {
		t.Version = baseVersion(ti.Tag)
	}
	return t
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Result summarises an applied plan.
type Result struct {
	TagsDeleted int `json:"tagsDeleted"`
	// TagsChanged were pushed again (or deleted) between planning and applying, and so
	// kept.
	TagsChanged      int            `json:"tagsChanged"`
	UntaggedDeleted  int            `json:"untaggedDeleted"`
	GarbageCollected cache.GCReport `json:"gc"`
}

// Apply deletes the tags the plan deletes — each only if it still points at the
// planned manifest and was not pushed since —, then the untagged manifests of the
// repositories each policy governs (narrowed to registry and repoGlob, "" for all),
// then collects garbage with grace (nothing is reclaimed before it).
func (e *Engine) Apply(ctx context.Context, plan []Decision, registry, repoGlob string, grace time.Duration) (Result, error) {
	var res Result
	for _, d := range plan {
		if d.Keep {
			continue
		}
		tag, err := oci.ParseTag(d.Tag)
		if err != nil {
			return res, err
		}
		deleted, err := e.Store.DeleteTagIf(ctx, d.Registry, d.Repository, tag, oci.Digest(d.Digest), d.PushedAt)
		if err != nil {
			return res, fmt.Errorf("delete %s/%s:%s: %w", d.Registry, d.Repository, d.Tag, err)
		}
		if !deleted {
			res.TagsChanged++
			if e.Log != nil {
				e.Log.Info("retention kept a tag pushed since planning", "registry", d.Registry, "repo", d.Repository, "tag", d.Tag)
			}
			continue
		}
		res.TagsDeleted++
		if e.Events != nil {
			if err := e.Events.TagDeleted(d); err != nil {
				return res, fmt.Errorf("retention event for %s/%s:%s: %w", d.Registry, d.Repository, d.Tag, err)
			}
		}
	}
	for _, reg := range e.Registries {
		if registry != "" && reg != registry {
			continue
		}
		for i, p := range e.Policies {
			if p.UntaggedGrace <= 0 || !auth.MatchRegistry(p.Registries, reg) || (e.Only != "" && p.Name != e.Only) {
				continue
			}
			// A repository is governed by the first policy covering it.
			include := func(repo string) bool {
				if repoGlob != "" && !auth.MatchGlob(repoGlob, repo) {
					return false
				}
				return e.governs(i, reg, repo)
			}
			n, err := e.Store.PruneUntagged(ctx, reg, include, p.UntaggedGrace, false)
			if err != nil {
				return res, err
			}
			res.UntaggedDeleted += n
		}
	}
	gc, err := e.Store.CollectGarbage(ctx, cache.GCOptions{Grace: grace})
	res.GarbageCollected = gc
	if e.Log != nil {
		e.Log.Info("retention applied", "tags_deleted", res.TagsDeleted, "untagged_deleted", res.UntaggedDeleted,
			"manifests_collected", gc.Manifests, "blobs_collected", gc.Blobs, "bytes", gc.Bytes)
	}
	return res, err
}

// governs reports whether policy i is the first one covering reg/repo.
func (e *Engine) governs(i int, reg, repo string) bool {
	for j, p := range e.Policies {
		if p.covers(reg, repo) {
			return j == i
		}
	}
	return false
}
