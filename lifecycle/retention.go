package lifecycle

import (
	"regexp"
	"sort"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/dockyard/dockyard/oci"
)

// Tag is what retention knows of a tag.
type Tag struct {
	Name     string
	Digest   string
	PushedAt time.Time
	PulledAt time.Time // zero: never pulled
	Class    Class
	Version  *semver.Version // the release version the tag is about, nil for others
	// Subject is the manifest an accessory tag (a signature's, an attestation's, an
	// SBOM's, the referrers tag: oci.Accessories) names; "" for any other tag.
	Subject oci.Digest
}

// Rule keeps some tags of a repository. A policy keeps a tag when any rule keeps it.
type Rule interface {
	Name() string
	Keep(tags []Tag, now time.Time) map[string]bool
}

// Semver keeps, among releases, the newest version of each of the Majors newest
// majors; within the newest major, the versions whose minor is among the Minors newest
// minors, at most Patches per minor (newest first; Patches < 0 means all).
type Semver struct{ Majors, Minors, Patches int }

func (r Semver) Name() string { return "semver" }

func (r Semver) Keep(tags []Tag, _ time.Time) map[string]bool {
	keep := map[string]bool{}
	releases := byClass(tags, Release)
	sort.Slice(releases, func(i, j int) bool { return releases[i].Version.GreaterThan(releases[j].Version) })
	var majors []uint64
	for _, t := range releases {
		if len(majors) == 0 || majors[len(majors)-1] != t.Version.Major() {
			majors = append(majors, t.Version.Major())
		}
	}
	// The newest version of each of the N newest majors.
	for i, major := range majors {
		if i >= r.Majors {
			break
		}
		for _, t := range releases {
			if t.Version.Major() == major {
				keep[t.Name] = true
				break
			}
		}
	}
	if len(majors) == 0 || r.Minors <= 0 {
		return keep
	}
	// Within the newest major: the M newest minors, P patches each.
	var minors []uint64
	perMinor := map[uint64]int{}
	for _, t := range releases {
		if t.Version.Major() != majors[0] {
			continue
		}
		minor := t.Version.Minor()
		if len(minors) == 0 || minors[len(minors)-1] != minor {
			if len(minors) == r.Minors {
				break
			}
			minors = append(minors, minor)
		}
		if r.Patches < 0 || perMinor[minor] < r.Patches {
			perMinor[minor]++
			keep[t.Name] = true
		}
	}
	return keep
}

// PulledWithin keeps tags pulled in the last Window.
type PulledWithin struct{ Window time.Duration }

func (r PulledWithin) Name() string { return "pulled_within" }
func (r PulledWithin) Keep(tags []Tag, now time.Time) map[string]bool {
	return keepIf(tags, func(t Tag) bool { return !t.PulledAt.IsZero() && now.Sub(t.PulledAt) <= r.Window })
}

// PushedWithin keeps tags pushed in the last Window.
type PushedWithin struct{ Window time.Duration }

func (r PushedWithin) Name() string { return "pushed_within" }
func (r PushedWithin) Keep(tags []Tag, now time.Time) map[string]bool {
	return keepIf(tags, func(t Tag) bool { return now.Sub(t.PushedAt) <= r.Window })
}

// KeepLast keeps the Count most recently pushed tags.
type KeepLast struct{ Count int }

func (r KeepLast) Name() string { return "keep_last" }
func (r KeepLast) Keep(tags []Tag, _ time.Time) map[string]bool {
	sorted := append([]Tag(nil), tags...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].PushedAt.After(sorted[j].PushedAt) })
	keep := map[string]bool{}
	for i := 0; i < r.Count && i < len(sorted); i++ {
		keep[sorted[i].Name] = true
	}
	return keep
}

// Patterns keeps tags matching any pattern (whole tag).
type Patterns struct{ Patterns []*regexp.Regexp }

func (r Patterns) Name() string { return "keep" }
func (r Patterns) Keep(tags []Tag, _ time.Time) map[string]bool {
	return keepIf(tags, func(t Tag) bool {
		for _, p := range r.Patterns {
			if p.MatchString(t.Name) {
				return true
			}
		}
		return false
	})
}

// Snapshots keeps the PerVersion newest snapshots of each base version, and none of a
// version already released when DropReleased.
type Snapshots struct {
	PerVersion   int
	DropReleased bool
}

func (r Snapshots) Name() string { return "snapshots" }
func (r Snapshots) Keep(tags []Tag, _ time.Time) map[string]bool {
	released := releasedVersions(tags)
	groups := map[string][]Tag{}
	for _, t := range byClass(tags, Snapshot) {
		if r.DropReleased && released[t.Version.String()] {
			continue
		}
		groups[t.Version.String()] = append(groups[t.Version.String()], t)
	}
	keep := map[string]bool{}
	for _, g := range groups {
		sort.SliceStable(g, func(i, j int) bool { return g[i].PushedAt.After(g[j].PushedAt) })
		for i := 0; i < r.PerVersion && i < len(g); i++ {
			keep[g[i].Name] = true
		}
	}
	return keep
}

// Candidates keeps release candidates, but not those of a version already released
// when DropReleased.
type Candidates struct{ DropReleased bool }

func (r Candidates) Name() string { return "rcs" }
func (r Candidates) Keep(tags []Tag, _ time.Time) map[string]bool {
	released := releasedVersions(tags)
	return keepIf(byClass(tags, Candidate), func(t Tag) bool { return !r.DropReleased || !released[t.Version.String()] })
}

func byClass(tags []Tag, c Class) []Tag {
	var out []Tag
	for _, t := range tags {
		if t.Class == c && (t.Version != nil || c == Other) {
			out = append(out, t)
		}
	}
	return out
}

func releasedVersions(tags []Tag) map[string]bool {
	out := map[string]bool{}
	for _, t := range byClass(tags, Release) {
		out[t.Version.String()] = true
	}
	return out
}

func keepIf(tags []Tag, f func(Tag) bool) map[string]bool {
	keep := map[string]bool{}
	for _, t := range tags {
		if f(t) {
			keep[t.Name] = true
		}
	}
	return keep
}

// Decision is the plan's verdict on one tag and the rule that decided it.
type Decision struct {
	Registry   string `json:"registry"`
	Policy     string `json:"policy"`
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	Class      Class  `json:"class"`
	// Subject is the manifest an accessory tag follows.
	Subject string `json:"subject,omitempty"`
	// Size is the bytes of the tag's manifest (config, layers, an index's children)
	// and, but for an accessory tag, of the accessories that follow it: its referrers
	// and the manifests of accessory tags naming it, recursively.
	Size   int64  `json:"size,omitempty"`
	Keep   bool   `json:"keep"`
	Reason string `json:"reason"`
	// PushedAt is when the tag was pushed as the plan saw it: Apply deletes the tag only
	// if it has not been pushed since.
	PushedAt time.Time `json:"-"`
}

// Graph is how the manifests of a repository refer to each other (cache.ManifestGraph).
type Graph interface {
	// Has says whether the repository holds manifest d.
	Has(d oci.Digest) bool
	// Reach returns the manifests reachable from from (from included): the children
	// of indexes, the referrers of manifests, recursively.
	Reach(from []oci.Digest) map[oci.Digest]bool
	// Size is the bytes of manifest d (config, layers, an index's children).
	Size(d oci.Digest) int64
	// Referrers lists the manifests whose subject is d.
	Referrers(d oci.Digest) []oci.Digest
	// PushedAt is when manifest d was pushed into the repository.
	PushedAt(d oci.Digest) time.Time
}

// Plan decides every tag of one repository under rules. protected tags (immutable
// releases that may not be deleted) are always kept. An accessory tag is not judged by
// the rules, nor counted by them: it follows its subject (see followSubjects). g may be
// nil when no tag is an accessory; untaggedGrace is the policy's (0: it prunes no
// untagged manifests).
func Plan(repo string, tags []Tag, rules []Rule, protected func(tag string) bool, g Graph, untaggedGrace time.Duration, now time.Time) []Decision {
	var judged, accessories []Tag
	for _, t := range tags {
		if t.Subject != "" && g != nil {
			accessories = append(accessories, t)
		} else {
			judged = append(judged, t)
		}
	}
	kept := map[string]string{}
	for _, r := range rules {
		for name := range r.Keep(judged, now) {
			if _, ok := kept[name]; !ok {
				kept[name] = r.Name()
			}
		}
	}
	out := make([]Decision, 0, len(tags))
	var keptRoots, allRoots []oci.Digest
	for _, t := range judged {
		d := Decision{Repository: repo, Tag: t.Name, Digest: t.Digest, Class: t.Class, PushedAt: t.PushedAt}
		switch reason, ok := kept[t.Name]; {
		case ok:
			d.Keep, d.Reason = true, "kept by "+reason
		case protected != nil && protected(t.Name):
			d.Keep, d.Reason = true, "immutable release"
		default:
			d.Reason = "no rule keeps it"
		}
		if d.Keep {
			keptRoots = append(keptRoots, oci.Digest(t.Digest))
		}
		allRoots = append(allRoots, oci.Digest(t.Digest))
		out = append(out, d)
	}
	if len(accessories) > 0 {
		pruned := func(d oci.Digest) bool { // untagged, this run prunes it
			return untaggedGrace > 0 && !g.PushedAt(d).After(now.Add(-untaggedGrace))
		}
		out = append(out, followSubjects(repo, accessories, g, pruned, keptRoots, allRoots)...)
	}
	if g != nil {
		for i := range out {
			out[i].Size = sizeWithAccessories(oci.Digest(out[i].Digest), out[i].Subject != "", accessories, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tag < out[j].Tag })
	return out
}

// sizeWithAccessories is the bytes of manifest d, and unless it is itself an accessory
// (alone), of its accessories: referrers and the manifests of accessory tags naming it,
// recursively, each once.
func sizeWithAccessories(d oci.Digest, alone bool, accessories []Tag, g Graph) int64 {
	size := g.Size(d)
	if alone {
		return size
	}
	seen := map[oci.Digest]bool{d: true}
	queue := []oci.Digest{d}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		next := append([]oci.Digest(nil), g.Referrers(s)...)
		for _, t := range accessories {
			if t.Subject == s {
				next = append(next, oci.Digest(t.Digest))
			}
		}
		for _, n := range next {
			if !seen[n] {
				seen[n] = true
				size += g.Size(n)
				queue = append(queue, n)
			}
		}
	}
	return size
}

// followSubjects decides accessory tags by their subjects. A subject the kept tags
// reach (through indexes, referrers, and in turn the accessory tags of what they
// reach) stays, and its accessory tags with it. A subject no kept tag reaches goes with
// its accessory tags when this run's untagged pruning takes it (pruned: the policy
// prunes untagged manifests, and it was pushed before the grace); otherwise it stays
// as an untagged manifest, pullable by digest, and keeps them (they go once it is
// deleted: cache's accessory collection). An accessory tag whose subject is gone goes.
func followSubjects(repo string, accessories []Tag, g Graph, pruned func(oci.Digest) bool, keptRoots, allRoots []oci.Digest) []Decision {
	grow := func(roots []oci.Digest) map[oci.Digest]bool {
		for {
			reached := g.Reach(roots)
			n := len(roots)
			for _, t := range accessories {
				if reached[t.Subject] && !reached[oci.Digest(t.Digest)] {
					roots = append(roots, oci.Digest(t.Digest))
				}
			}
			if len(roots) == n {
				return reached
			}
		}
	}
	keep := grow(keptRoots)
	any := grow(allRoots)
	out := make([]Decision, 0, len(accessories))
	for _, t := range accessories {
		d := Decision{Repository: repo, Tag: t.Name, Digest: t.Digest, Class: t.Class, Subject: string(t.Subject), PushedAt: t.PushedAt}
		switch {
		case !g.Has(t.Subject):
			d.Reason = "follows subject " + string(t.Subject) + ", which is gone"
		case keep[t.Subject]:
			d.Keep, d.Reason = true, "follows subject "+string(t.Subject)+", kept"
		case any[t.Subject] && pruned(t.Subject):
			d.Reason = "follows subject " + string(t.Subject) + ", deleted"
		case pruned(t.Subject):
			d.Reason = "follows subject " + string(t.Subject) + ", untagged and pruned"
		default:
			d.Keep, d.Reason = true, "follows subject "+string(t.Subject)+", untagged"
		}
		out = append(out, d)
	}
	return out
}
