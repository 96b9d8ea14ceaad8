// Package lifecycle owns what happens to images over time: tag classes (releases,
// release candidates, snapshots, others), immutable releases, retention policies that
// understand versions, the plans they produce, and the scheduled jobs (retention,
// garbage collection, upload purging) that carry them out. Storage is reached through
// a narrow interface; HTTP is not its concern.
package lifecycle

import (
	"fmt"
	"regexp"

	"github.com/Masterminds/semver/v3"
)

// Class is the kind of a tag.
type Class string

const (
	Release   Class = "release"  // 1.2.3, v1.2.3
	Candidate Class = "rc"       // 1.2.3-RC1, 1.2.3-rc.2
	Snapshot  Class = "snapshot" // 1.2.3-SNAPSHOT
	Other     Class = "other"    // latest, main, feature-x, sha-…
)

// Classes recognise tags. The defaults can be replaced in the configuration.
type Classes struct {
	Release, Candidate, Snapshot *regexp.Regexp
}

// DefaultClasses are the patterns of Maven-style and semver tags.
func DefaultClasses() Classes {
	return Classes{
		Release:   regexp.MustCompile(`^v?\d+\.\d+\.\d+$`),
		Candidate: regexp.MustCompile(`^v?\d+\.\d+\.\d+[-.]?(?i:rc)[.-]?\d+$`),
		Snapshot:  regexp.MustCompile(`^v?\d+\.\d+\.\d+-SNAPSHOT([.-][0-9A-Za-z.-]+)?$`),
	}
}

// CompileClasses builds classes from patterns; empty ones keep the default.
func CompileClasses(release, candidate, snapshot string) (Classes, error) {
	c := DefaultClasses()
	for _, p := range []struct {
		src string
		dst **regexp.Regexp
	}{{release, &c.Release}, {candidate, &c.Candidate}, {snapshot, &c.Snapshot}} {
		if p.src == "" {
			continue
		}
		re, err := regexp.Compile(p.src)
		if err != nil {
			return c, fmt.Errorf("tag class pattern %q: %w", p.src, err)
		}
		*p.dst = re
	}
	return c, nil
}

// Of classifies a tag.
func (c Classes) Of(tag string) Class {
	class := Other
	switch {
	case c.Release.MatchString(tag):
		class = Release
	case c.Candidate.MatchString(tag):
		class = Candidate
	case c.Snapshot.MatchString(tag):
		class = Snapshot
	}
	// A version number past 64 bits cannot be ordered (retention would pass the tag
	// over as versionless): such a tag is no version.
	if class != Other && versionRe.MatchString(tag) && baseVersion(tag) == nil {
		return Other
	}
	return class
}

// versionRe finds the MAJOR.MINOR.PATCH at the start of a tag.
var versionRe = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)`)

// baseVersion is the release version a tag is about (1.2.3 for 1.2.3-RC1), or nil.
func baseVersion(tag string) *semver.Version {
	m := versionRe.FindStringSubmatch(tag)
	if m == nil {
		return nil
	}
	v, err := semver.NewVersion(m[1] + "." + m[2] + "." + m[3])
	if err != nil {
		return nil
	}
	return v
}
