package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/config"
	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/lifecycle"
	"github.com/dockyard/dockyard/oci"
)

// buildLifecycle makes the retention engine, immutability rules and jobs of the
// configuration.
func buildLifecycle(cfg *config.Config, store *cache.Store, events lifecycle.Events, log *slog.Logger) (*lifecycle.Jobs, *lifecycle.Immutability, error) {
	l := cfg.Lifecycle
	classes, err := lifecycle.CompileClasses(l.Classes.Release, l.Classes.RC, l.Classes.Snapshot)
	if err != nil {
		return nil, nil, err
	}
	accessories, err := oci.NewAccessories(l.Accessories.Tags)
	if err != nil {
		return nil, nil, err
	}
	im := &lifecycle.Immutability{Classes: classes, Accessories: accessories}
	for _, r := range l.Immutable {
		im.Rules = append(im.Rules, lifecycle.ImmutableRule{Registries: r.Registries, Repositories: r.Repositories,
			Candidates: r.RCs, AllowDelete: r.AllowDelete})
	}
	var hosted []string
	for _, r := range cfg.Registries {
		if r.Type == "hosted" {
			hosted = append(hosted, r.Name)
		}
	}
	engine := &lifecycle.Engine{Store: store, Registries: hosted, Classes: classes, Accessories: accessories, Immutable: im, Log: log, Events: events}
	every := map[string]time.Duration{}
	for i, r := range l.Retention {
		p := lifecycle.Policy{Name: r.Name, Registries: r.Registries, Repositories: r.Repositories, UntaggedGrace: r.UntaggedGrace}
		if p.Name == "" {
			p.Name = "retention[" + strconv.Itoa(i) + "]"
		}
		if s := r.Semver; s != nil {
			patches := -1
			if s.Patches != "all" && s.Patches != "" {
				patches, _ = strconv.Atoi(s.Patches)
			}
			p.Rules = append(p.Rules, lifecycle.Semver{Majors: s.Majors, Minors: s.Minors, Patches: patches})
		}
		if r.PulledWithin > 0 {
			p.Rules = append(p.Rules, lifecycle.PulledWithin{Window: r.PulledWithin})
		}
		if r.PushedWithin > 0 {
			p.Rules = append(p.Rules, lifecycle.PushedWithin{Window: r.PushedWithin})
		}
		if r.KeepLast > 0 {
			p.Rules = append(p.Rules, lifecycle.KeepLast{Count: r.KeepLast})
		}
		if len(r.Keep) > 0 {
			var pats []*regexp.Regexp
			for _, k := range r.Keep {
				pats = append(pats, regexp.MustCompile("^(?:"+k+")$"))
			}
			p.Rules = append(p.Rules, lifecycle.Patterns{Patterns: pats})
		}
		if s := r.Snapshots; s != nil {
			p.Rules = append(p.Rules, lifecycle.Snapshots{PerVersion: s.KeepPerVersion, DropReleased: s.DropReleased})
		}
		if rc := r.RCs; rc != nil {
			p.Rules = append(p.Rules, lifecycle.Candidates{DropReleased: rc.DropReleased})
		}
		engine.Policies = append(engine.Policies, p)
		if r.Schedule > 0 {
			every[p.Name] = r.Schedule
		}
	}
	jobs := &lifecycle.Jobs{Engine: engine, Store: store, GCInterval: l.GC.Interval, GCGrace: l.GC.Grace,
		PurgeInterval: l.Uploads.Interval, PurgeAfter: l.Uploads.PurgeAfter, RetentionEvery: every, Log: log}
	for _, r := range cfg.Registries {
		if r.Type == "proxy" && r.Cache != (config.ProxyCache{}) {
			jobs.Evictions = append(jobs.Evictions, lifecycle.Eviction{Registry: r.Name, MaxBytes: int64(r.Cache.MaxSize), PulledWithin: r.Cache.PulledWithin})
		}
	}
	return jobs, im, nil
}

// immutableHook adapts the immutability rules to one hosted registry.
func immutableHook(im *lifecycle.Immutability, reg string) func(repo, tag string) (string, bool, bool) {
	if im == nil || len(im.Rules) == 0 {
		return nil
	}
	return func(repo, tag string) (string, bool, bool) {
		i := im.Rule(reg, repo, tag)
		if i < 0 {
			return "", false, false
		}
		return "lifecycle.immutable[" + strconv.Itoa(i) + "]", true, im.Rules[i].AllowDelete
	}
}

// openOffline opens the store of a configuration for an administrative command.
func openOffline(path, data string) (*config.Config, *cache.Store, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	if data != "" {
		cfg.Data = data
	}
	// An offline command reads the whole index, in transactions far longer than a
	// request's: index.postgres.timeout bounds requests.
	cfg.Index.Postgres.Timeout = max(cfg.Index.Postgres.Timeout, time.Hour)
	store, err := openStore(cfg, slog.Default())
	if err != nil {
		return nil, nil, fmt.Errorf("%w (is the server running on this data directory?)", err)
	}
	acc, err := oci.NewAccessories(cfg.Lifecycle.Accessories.Tags)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	store.SetAccessories(acc, cfg.Lifecycle.Accessories.DeleteWithSubject)
	return cfg, store, nil
}

// gcCommand: dockyard gc [--dry-run] [--grace D].
func gcCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file")
	data := fs.String("data", "", "data directory")
	dry := fs.Bool("dry-run", false, "report what would be deleted")
	grace := fs.Duration("grace", -1, "override lifecycle.gc.grace")
	purge := fs.Bool("purge-uploads", true, "also purge abandoned uploads")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, store, err := openOffline(*path, *data)
	if err != nil {
		return err
	}
	defer store.Close()
	g := cfg.Lifecycle.GC.Grace
	if *grace >= 0 {
		g = *grace
	}
	r, err := store.CollectGarbage(context.Background(), cache.GCOptions{Grace: g, DryRun: *dry})
	if err != nil {
		return err
	}
	verb := "deleted"
	if *dry {
		verb = "would delete"
	}
	fmt.Fprintf(stdout, "gc %s %d manifests, %d blobs (%d bytes), %d orphan files, %d accessories of deleted manifests (grace %s)\n", verb, r.Manifests, r.Blobs, r.Bytes, r.OrphanFiles, r.Accessories, g)
	if *dry {
		fmt.Fprintln(stdout, "(a dry run sees what is unreferenced now; what those manifests alone reference is released, and counted, only when they go)")
	}
	if *purge && !*dry {
		n, err := store.PurgeUploads(context.Background(), cfg.Lifecycle.Uploads.PurgeAfter)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "purged %d abandoned uploads older than %s\n", n, cfg.Lifecycle.Uploads.PurgeAfter)
	}
	return nil
}

// lifecycleCommand: dockyard lifecycle plan|apply [--registry R] [--repo GLOB] [--json].
func lifecycleCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "plan" && args[0] != "apply") {
		return errors.New("usage: dockyard lifecycle plan|apply [--registry R] [--repo GLOB] [--json]")
	}
	fs := flag.NewFlagSet("lifecycle "+args[0], flag.ContinueOnError)
	path := fs.String("config", "", "configuration file")
	data := fs.String("data", "", "data directory")
	registry := fs.String("registry", "", "only this registry")
	repo := fs.String("repo", "", "only repositories matching this glob")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, store, err := openOffline(*path, *data)
	if err != nil {
		return err
	}
	defer store.Close()
	// Tags deleted here are queued for the webhooks: the server delivers them.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	notifier := buildNotifier(cfg, store, quiet)
	jobs, _, err := buildLifecycle(cfg, store, retentionEvents(notifier), quiet)
	if err != nil {
		return err
	}
	ctx := context.Background()
	plan, err := jobs.Engine.PlanSized(ctx, *registry, *repo)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(plan); err != nil {
			return err
		}
	} else {
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "REGISTRY\tREPOSITORY\tTAG\tCLASS\tSIZE\tDECISION\tWHY")
		for _, d := range plan {
			verdict := "delete"
			if d.Keep {
				verdict = "keep"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Registry, d.Repository, d.Tag, d.Class, humanize.IBytes(uint64(d.Size)), verdict, d.Reason)
		}
		w.Flush()
	}
	if args[0] == "apply" {
		res, err := jobs.Engine.Apply(ctx, plan, *registry, *repo, cfg.Lifecycle.GC.Grace)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %d tags and %d untagged manifests; collected %d manifests and %d blobs\n",
			res.TagsDeleted, res.UntaggedDeleted, res.GarbageCollected.Manifests, res.GarbageCollected.Blobs)
	}
	return nil
}

// adminJobs runs lifecycle jobs for the gateway's admin endpoint, under the server's
// lifetime (life ends at shutdown) rather than the request's, and counted so that the
// store is not closed under one.
type adminJobs struct {
	jobs    *lifecycle.Jobs
	auth    *auth.Service // nil when authentication is off
	life    context.Context
	running *sync.WaitGroup // shared by the admins a reload replaced, waited for at exit
	// reload re-reads the configuration (nil: not offered).
	reload func() ([]string, error)
}

// Wait returns once no job started through the admin endpoint is running.
func (a *adminJobs) Wait() {
	if a.running != nil {
		a.running.Wait()
	}
}

func (a *adminJobs) Run(_ context.Context, job string, params map[string]string) (any, error) {
	if a.running == nil {
		a.running = &sync.WaitGroup{} // a test's adminJobs
	}
	a.running.Add(1)
	defer a.running.Done()
	ctx := a.life
	j := a.jobs
	busy := func(v any, err error) (any, error) {
		if errors.Is(err, lifecycle.ErrBusy) {
			return nil, gateway.ErrAdminBusy
		}
		return v, err
	}
	switch job {
	case "gc":
		return busy(j.GC(ctx, params["dry_run"] == "true"))
	case "purge":
		n, err := j.Purge(ctx)
		return busy(map[string]int{"purged": n}, err)
	case "retention":
		return busy(j.Retention(ctx, params["policy"]))
	case "plan":
		return j.Engine.PlanSized(ctx, params["registry"], params["repo"])
	case "revoke":
		if a.auth == nil {
			return nil, oci.ErrUnsupported.Withf("authentication is off: there are no tokens to revoke")
		}
		if params["user"] == "" {
			return nil, oci.ErrUnsupported.Withf("revoke needs ?user=NAME")
		}
		n, err := a.auth.RevokeUser(ctx, params["user"])
		return map[string]any{"user": params["user"], "ciTokensRevoked": n}, err
	case "reload":
		if a.reload == nil {
			return nil, oci.ErrUnsupported.Withf("this server cannot reload its configuration")
		}
		warnings, err := a.reload()
		if err != nil {
			return nil, err
		}
		if warnings == nil {
			warnings = []string{}
		}
		return map[string]any{"reloaded": true, "restart_needed_for": warnings}, nil
	case "jobs":
		return map[string]int64{
			"gcRuns": j.Counters().GCRuns.Load(), "blobsCollected": j.Counters().BlobsCollected.Load(), "manifestsCollected": j.Counters().ManifestsCollected.Load(),
			"uploadsPurged": j.Counters().UploadsPurged.Load(), "retentionRuns": j.Counters().RetentionRuns.Load(), "tagsDeleted": j.Counters().TagsDeleted.Load(),
		}, nil
	}
	return nil, oci.ErrNotFound.Withf("unknown job %q (gc, purge, retention, plan, jobs, revoke, reload)", job)
}
