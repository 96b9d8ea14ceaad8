package lifecycle

import (
	"math/big"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
)

// leadingVersion is MAJOR.MINOR.PATCH at the start of a tag, read without limits.
var leadingVersion = regexp.MustCompile(`^v?([0-9]+)\.([0-9]+)\.([0-9]+)`)

func numbers(tag string) [3]*big.Int {
	m := leadingVersion.FindStringSubmatch(tag)
	var out [3]*big.Int
	for i := range out {
		out[i], _ = new(big.Int).SetString(m[i+1], 10)
	}
	return out
}

// With the default classes, a tag classed as a release, candidate or snapshot has the
// version its numbers say (so retention can order it), a candidate's or snapshot's
// version is itself a release tag, and two releases order as their numbers do.
// With any classes, retention decides every tag exactly once and keeps what is
// protected.
func FuzzTagClasses(f *testing.F) {
	for _, s := range [][3]string{
		{"1.2.3", "v1.10.0", ""}, {"1.2.3-RC1", "1.2.3-rc.2", ""}, {"1.2.3-SNAPSHOT", "1.2.3-SNAPSHOT.20240101", ""},
		{"latest", "main", ""}, {"01.2.3", "1.2.3", ""}, {"v0.0.0", "0.0.1", `^release-\d+$`},
		{"99999999999999999999.0.0", "1.0.0", ""}, // regression: a release without a version {"release-7", "1.2.3", `^release-\d+$`}, {"x", "y", `(`},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, tag, other, releasePattern string) {
		c := DefaultClasses()
		for _, tg := range []string{tag, other} {
			class := c.Of(tg)
			if class == Other {
				continue
			}
			v := baseVersion(tg)
			if v == nil {
				t.Fatalf("%q is a %s without a version", tg, class)
			}
			n := numbers(tg)
			if new(big.Int).SetUint64(v.Major()).Cmp(n[0]) != 0 || new(big.Int).SetUint64(v.Minor()).Cmp(n[1]) != 0 || new(big.Int).SetUint64(v.Patch()).Cmp(n[2]) != 0 {
				t.Fatalf("%q is version %s", tg, v)
			}
			if class != Release && c.Of(v.String()) != Release {
				t.Fatalf("%q is a %s of %s, which is no release", tg, class, v)
			}
		}
		if c.Of(tag) == Release && c.Of(other) == Release {
			a, b := numbers(tag), numbers(other)
			want := 0
			for i := 0; i < 3 && want == 0; i++ {
				want = a[i].Cmp(b[i])
			}
			if got := baseVersion(tag).Compare(baseVersion(other)); got != want {
				t.Fatalf("%q vs %q: %d, the numbers say %d", tag, other, got, want)
			}
		}

		classes, err := CompileClasses(releasePattern, "", "")
		if err != nil {
			return
		}
		e := &Engine{Classes: classes}
		now := time.Now()
		var tags []Tag
		for i, name := range []string{tag, other, "1.0.0", "1.0.1-SNAPSHOT", "1.0.1-rc1"} {
			if slices.ContainsFunc(tags, func(x Tag) bool { return x.Name == name }) {
				continue
			}
			tg := e.tag(cache.TagInfo{Tag: name, Digest: oci.FromBytes(oci.SHA256, []byte(name)), PushedAt: now.Add(-time.Duration(i) * time.Hour)})
			tags = append(tags, tg)
		}
		rules := []Rule{Semver{Majors: 1, Minors: 1, Patches: 1}, Snapshots{PerVersion: 1, DropReleased: true}, Candidates{DropReleased: true}, KeepLast{Count: 1}}
		protected := func(name string) bool { return classes.Of(name) == Release }
		plan := Plan("a", tags, rules, protected, nil, 0, now)
		if len(plan) != len(tags) {
			t.Fatalf("%d decisions for %d tags", len(plan), len(tags))
		}
		for _, d := range plan {
			if protected(d.Tag) && !d.Keep {
				t.Fatalf("protected release %q not kept: %+v", d.Tag, d)
			}
		}
	})
}
