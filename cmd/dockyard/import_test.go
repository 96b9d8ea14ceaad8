package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/errgroup"

	"github.com/dockyard/dockyard/test/peers/refreg"
)

// commandEnv, when set, makes the test binary run the dockyard command whose
// arguments it holds (a JSON array) instead of the tests: a separate process running
// the same code as bin/dockyard, which a test can kill -9 mid-run, without building the
// binary (and every dependency again without -race) inside the test.
const commandEnv = "DOCKYARD_TEST_COMMAND"

// runAsCommand is called first by TestMain.
func runAsCommand() {
	args, ok := os.LookupEnv(commandEnv)
	if !ok {
		return
	}
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		fmt.Fprintln(os.Stderr, commandEnv+":", err)
		os.Exit(2)
	}
	if err := run(argv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dockyard:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// dockyardCommand is the dockyard command with args, as a process of its own.
func dockyardCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	argv, _ := json.Marshal(args)
	cmd.Env = append(os.Environ(), commandEnv+"="+string(argv))
	return cmd
}

// referenceRegistry starts the CNCF reference registry with htpasswd (bcrypt)
// authentication for user:password.
func referenceRegistry(t *testing.T, user, password string) string {
	return refreg.Start(t, refreg.Options{User: user, Password: password})
}

// memDir is a temporary directory in memory (/dev/shm) where there is one. Both
// registries sync every file they write (the reference registry five or so per
// manifest, dockyard its index), which on a disk would take most of the import test;
// what is tested (an import killed and resumed) does not depend on the disk.
func memDir(t *testing.T) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "dockyard-import-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// importSource is what was pushed to the source: tags by repository, and the
// referrers of each subject.
type importSource struct {
	tags      map[string][]string
	referrers map[string][]v1.Hash // "repo@digest" → referrer digests
	byTag     map[string][]string  // "repo:tag" → the "repo@digest" keys of what it refers to, at any depth
	mu        sync.Mutex
}

const (
	importRepos        = 20
	importTagsPerRepo  = 16
	importSourceUser   = "nexus-admin"
	importSourcePass   = "s3cret pass" // a space: the password file is read whole
	importDestUser     = "importer"
	importDestPassword = "dest-secret"
)

// populateSource pushes 20 repositories of 16 tags (320): images, and every fourth a
// two-platform index; every fifth gets an SBOM referrer (pushed by digest, so the
// reference registry, which has no referrers API, lists it under the referrers tag
// `sha256-<hex>`), the first SBOM a signature of its own, and one platform manifest a
// referrer. Layers are tiny and shared within a repository.
func populateSource(t *testing.T, addr string) *importSource {
	t.Helper()
	ctx := t.Context()
	a := &authn.Basic{Username: importSourceUser, Password: importSourcePass}
	pusher, err := remote.NewPusher(remote.WithAuth(a))
	if err != nil {
		t.Fatal(err)
	}
	src := &importSource{tags: map[string][]string{}, referrers: map[string][]v1.Hash{}, byTag: map[string][]string{}}
	refer := func(repo name.Repository, tag string, subject partial.Describable, kind string) v1.Image {
		d, err := partial.Descriptor(subject)
		if err != nil {
			t.Error(err)
			return nil
		}
		art, err := mutate.Append(empty.Image, mutate.Addendum{Layer: static.NewLayer([]byte(kind+" of "+d.Digest.String()), types.MediaType("application/vnd.example."+kind))})
		if err != nil {
			t.Error(err)
			return nil
		}
		art = mutate.ConfigMediaType(mutate.MediaType(art, types.OCIManifestSchema1), types.MediaType("application/vnd.example."+kind+".config"))
		art = mutate.Subject(art, *d).(v1.Image)
		digest, _ := art.Digest()
		if err := pusher.Push(ctx, repo.Digest(digest.String()), art); err != nil {
			t.Error(err)
		}
		key := repo.RepositoryStr() + "@" + d.Digest.String()
		src.mu.Lock()
		src.referrers[key] = append(src.referrers[key], digest)
		src.byTag[repo.RepositoryStr()+":"+tag] = append(src.byTag[repo.RepositoryStr()+":"+tag], key)
		src.mu.Unlock()
		return art
	}
	// Every repository's arm64 image has the same layer and config, which the import
	// mounts from the first repository it copied them to.
	arm, err := random.Image(300, 1)
	if err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	g.SetLimit(16)
	for r := range importRepos {
		repoName := fmt.Sprintf("group%d/app%02d", r%3, r)
		repo, _ := name.NewRepository(addr+"/"+repoName, name.Insecure)
		amd, err := random.Image(300, 1)
		if err != nil {
			t.Fatal(err)
		}
		var tags []string
		for k := range importTagsPerRepo {
			tag := fmt.Sprintf("1.%d.0", k)
			if k == importTagsPerRepo-1 {
				tag = "latest" // the same image as the tag before
			}
			tags = append(tags, tag)
			n := min(k, importTagsPerRepo-2)
			g.Go(func() error {
				note := map[string]string{"org.example.build": fmt.Sprint(n)}
				var pushed partial.Describable
				if n%4 == 0 {
					idx := mutate.AppendManifests(empty.Index,
						mutate.IndexAddendum{Add: mutate.Annotations(amd, note).(v1.Image),
							Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
						mutate.IndexAddendum{Add: mutate.Annotations(arm, note).(v1.Image),
							Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
					idx = mutate.Annotations(idx, note).(v1.ImageIndex)
					if err := pusher.Push(ctx, repo.Tag(tag), idx); err != nil {
						return fmt.Errorf("%s:%s: %w", repoName, tag, err)
					}
					if n == 4 && k == n {
						refer(repo, tag, mutate.Annotations(arm, note).(v1.Image), "platform-sbom")
					}
					pushed = idx
				} else {
					img := mutate.Annotations(amd, note).(v1.Image)
					if err := pusher.Push(ctx, repo.Tag(tag), img); err != nil {
						return fmt.Errorf("%s:%s: %w", repoName, tag, err)
					}
					pushed = img
				}
				if n%5 == 0 && k == n {
					sbom := refer(repo, tag, pushed, "sbom")
					if n == 0 {
						refer(repo, tag, sbom, "signature")
					}
				}
				return nil
			})
		}
		src.tags[repoName] = tags
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return src
}

// importSummary reads the closing line of an import's output.
var importSummary = regexp.MustCompile(`import: finished in .*: (\d+)/(\d+) repositories, (\d+) images: (\d+) copied, (\d+) skipped, (\d+) failed; (\d+) referrers copied; (\d+) blobs mounted`)

type importCounts struct{ repos, images, copied, skipped, failed, referrers, mounted int }

func parseImportSummary(t *testing.T, out string) importCounts {
	t.Helper()
	m := importSummary.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in the import's output:\n%s", out)
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	return importCounts{repos: n(2), images: n(3), copied: n(4), skipped: n(5), failed: n(6), referrers: n(7), mounted: n(8)}
}

// Import: 320 tags across 20 repositories, with multi-platform indexes and referrers,
// from a reference registry with authentication into a dockyard with token
// authentication (through a namespace route); the import is killed with SIGKILL in
// the middle and run again: every tag then resolves at the destination to the
// source's digest with byte-identical manifests, the referrers are served by the
// referrers API, and a third run copies nothing.
func TestImportFromAuthenticatedRegistryResumesAfterKill(t *testing.T) {
	srcAddr := referenceRegistry(t, importSourceUser, importSourcePass)
	began := time.Now()
	src := populateSource(t, srcAddr)
	t.Logf("source populated in %s", time.Since(began).Round(time.Millisecond))

	dir := memDir(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte(importDestPassword), 10)
	os.WriteFile(filepath.Join(dir, "users"), []byte(importDestUser+":"+string(hash)+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "dockyard.yaml"), []byte(`log: {access: false}
registries:
  - {name: default, type: hosted}
  - {name: moved, type: hosted}
routes:
  - {host: "*", registry: default, namespaces: {nexus: moved}}
auth:
  mode: token
  users_file: users
  rules:
    - {subjects: ["user:`+importDestUser+`"], registries: ["*"], repositories: ["**"], actions: [pull, push, delete]}
`), 0o600)
	dstAddr, stop := serveWith(t, filepath.Join(dir, "dockyard.yaml"), filepath.Join(dir, "data"))
	defer stop()
	srcPass, dstPass := filepath.Join(dir, "source-password"), filepath.Join(dir, "dest-password")
	os.WriteFile(srcPass, []byte(importSourcePass+"\n"), 0o600)
	os.WriteFile(dstPass, []byte(importDestPassword), 0o600)
	args := []string{"import", "--from", "http://" + srcAddr, "--username", importSourceUser, "--password-file", srcPass,
		"--to", "http://" + dstAddr, "--into", "nexus", "--to-username", importDestUser, "--to-password-file", dstPass,
		"--concurrency", "4", "--page-size", "7", "--progress-interval", "200ms"}

	// First run: killed once three repositories are done.
	cmd := dockyardCommand(t, args...)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var first strings.Builder
	lines := bufio.NewScanner(stdout)
	for done := 0; lines.Scan(); {
		first.WriteString(lines.Text() + "\n")
		if strings.HasPrefix(lines.Text(), "import: repository ") {
			if done++; done == 3 {
				cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
	}
	io.Copy(io.Discard, stdout)
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the first run was not killed (%v); its output:\n%s%s", err, first.String(), stderr.String())
	}
	t.Logf("first run, killed:\n%s", first.String())

	// Second run: resumes.
	out, err := dockyardCommand(t, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("the resumed import failed: %v\n%s", err, out)
	}
	second := parseImportSummary(t, string(out))
	total := importRepos * importTagsPerRepo
	totalWithFallback := total + len(src.referrers) // the reference registry's sha256-<hex> tags
	if second.repos != importRepos || second.images != totalWithFallback || second.failed != 0 ||
		second.skipped == 0 || second.copied == 0 || second.copied+second.skipped != totalWithFallback || second.mounted == 0 {
		t.Fatalf("resumed run: %+v, want %d images in %d repositories, some copied before the kill and the rest now, the shared blobs mounted\n%s",
			second, totalWithFallback, importRepos, out)
	}
	t.Logf("resumed run: %+v", second)
	t.Logf("%s", out)

	// Everything equal: each source tag at the destination, the same bytes and type.
	srcAuth := remote.WithAuth(&authn.Basic{Username: importSourceUser, Password: importSourcePass})
	dstAuth := remote.WithAuth(&authn.Basic{Username: importDestUser, Password: importDestPassword})
	srcPuller, _ := remote.NewPuller(srcAuth)
	dstPuller, _ := remote.NewPuller(dstAuth)
	ctx := context.Background()
	checked := 0
	for repoName := range src.tags {
		srcRepo, _ := name.NewRepository(srcAddr+"/"+repoName, name.Insecure)
		dstRepo, _ := name.NewRepository(dstAddr+"/nexus/"+repoName, name.Insecure)
		tags, err := srcPuller.List(ctx, srcRepo)
		if err != nil {
			t.Fatal(err)
		}
		if len(tags) < importTagsPerRepo {
			t.Fatalf("%s has %d tags at the source", repoName, len(tags))
		}
		for _, tag := range tags {
			want, err := srcPuller.Get(ctx, srcRepo.Tag(tag))
			if err != nil {
				t.Fatal(err)
			}
			got, err := dstPuller.Get(ctx, dstRepo.Tag(tag))
			if err != nil {
				t.Errorf("%s:%s at the destination: %v", repoName, tag, err)
				continue
			}
			if got.Digest != want.Digest || got.MediaType != want.MediaType || !bytes.Equal(got.Manifest, want.Manifest) {
				t.Errorf("%s:%s: destination %s %s, source %s %s", repoName, tag, got.Digest, got.MediaType, want.Digest, want.MediaType)
			}
			checked++
		}
	}
	if checked != totalWithFallback {
		t.Errorf("checked %d tags, want %d", checked, totalWithFallback)
	}
	// The referrers, listed by dockyard's referrers API (no tag fallback).
	for key := range src.referrers {
		checkReferrers(t, dstAddr+"/nexus", key, src.referrers[key], dstAuth)
	}

	// Third run: nothing left to copy.
	out, err = dockyardCommand(t, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("third run: %v\n%s", err, out)
	}
	if third := parseImportSummary(t, string(out)); third.copied != 0 || third.skipped != totalWithFallback || third.referrers != 0 || third.failed != 0 {
		t.Errorf("third run: %+v, want all %d skipped\n%s", third, totalWithFallback, out)
	}

	// Filters: a glob of repositories and a regular expression of tags, into another
	// namespace of the default registry.
	var filtered bytes.Buffer
	fargs := append(slices.Clone(args), "--into", "filtered", "--repositories", "group1/**", "--tags", `1\.[0-2]\.0`)
	if err := run(fargs, &filtered, io.Discard); err != nil {
		t.Fatalf("filtered import: %v\n%s", err, filtered.String())
	}
	reg, _ := name.NewRegistry(dstAddr, name.Insecure)
	repos, err := dstPuller.Catalog(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range repos {
		if strings.HasPrefix(r, "filtered/") {
			got = append(got, r)
		}
	}
	var want []string
	for r := range src.tags {
		if strings.HasPrefix(r, "group1/") {
			want = append(want, "filtered/"+r)
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("filtered import made repositories %v, want %v", got, want)
	}
	for _, r := range want {
		repo, _ := name.NewRepository(dstAddr+"/"+r, name.Insecure)
		tags, err := dstPuller.List(ctx, repo)
		if slices.Sort(tags); err != nil || !slices.Equal(tags, []string{"1.0.0", "1.1.0", "1.2.0"}) {
			t.Errorf("%s has tags %v (%v), want 1.0.0 1.1.0 1.2.0", r, tags, err)
		}
		// The referrers of 1.0.0 (an SBOM, and a signature of the SBOM) came without
		// their sha256-<hex> tags, which --tags left out.
		keys := src.byTag[strings.TrimPrefix(r, "filtered/")+":1.0.0"]
		if len(keys) != 2 {
			t.Fatalf("%s:1.0.0 has referrers %v at the source, want an SBOM and its signature", r, keys)
		}
		for _, key := range keys {
			checkReferrers(t, dstAddr+"/filtered", key, src.referrers[key], dstAuth)
		}
	}

	// Last (dockyard locks a user out after repeated failed logins): a wrong
	// destination password ends the import at once, saying which credentials.
	os.WriteFile(dstPass, []byte("wrong"), 0o600)
	out, err = dockyardCommand(t, args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "check --to-username and --to-password-file") {
		t.Errorf("an import with a wrong destination password: %v\n%s", err, out)
	}
}

// checkReferrers asks dockyard's referrers API (no tag fallback) at prefix for the
// referrers of key ("repo@digest") and wants each of want among them.
func checkReferrers(t *testing.T, prefix, key string, want []v1.Hash, opts ...remote.Option) {
	t.Helper()
	repoName, subject, _ := strings.Cut(key, "@")
	d, _ := name.NewDigest(prefix+"/"+repoName+"@"+subject, name.Insecure)
	idx, err := remote.Referrers(d, append(opts, remote.WithReferrersTagFallback(false))...)
	if err != nil {
		t.Errorf("referrers of %s: %v", key, err)
		return
	}
	m, _ := idx.IndexManifest()
	var got []v1.Hash
	for _, r := range m.Manifests {
		got = append(got, r.Digest)
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("referrers of %s at %s: %v, want %v among them", key, prefix, got, w)
		}
	}
}

// A wrong source password ends the import at once with an error naming the cause,
// and the command exits non-zero.
func TestImportWithWrongPasswordFails(t *testing.T) {
	srcAddr := referenceRegistry(t, importSourceUser, importSourcePass)
	dir := t.TempDir()
	pass := filepath.Join(dir, "password")
	os.WriteFile(pass, []byte("not the password\n"), 0o600)
	out, err := dockyardCommand(t, "import", "--from", "http://"+srcAddr, "--username", importSourceUser,
		"--password-file", pass, "--to", "http://127.0.0.1:1").CombinedOutput()
	if err == nil {
		t.Fatalf("the import succeeded with a wrong password:\n%s", out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", err)
	}
	for _, want := range []string{"source http://" + srcAddr, "UNAUTHORIZED", "check --username and --password-file"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the output does not say %q:\n%s", want, out)
		}
	}
}

// --into names the destination as `docker push` would (a first component with a dot,
// a colon or localhost is a host), and requests for that name go to --to with the
// name as their Host; a source's path (Nexus' path-based routing) goes before /v2/.
func TestImportNamesTheDestinationLikeDocker(t *testing.T) {
	for _, c := range []struct {
		into, host, prefix, repo string
	}{
		{"", "127.0.0.1:5000", "", "127.0.0.1:5000/team/app"},
		{"nexus", "127.0.0.1:5000", "nexus", "127.0.0.1:5000/nexus/team/app"},
		{"moved/from/nexus/", "127.0.0.1:5000", "moved/from/nexus", "127.0.0.1:5000/moved/from/nexus/team/app"},
		{"dev.registry.example.com", "dev.registry.example.com", "", "dev.registry.example.com/team/app"},
		{"registry.example.com/ghcr", "registry.example.com", "ghcr", "registry.example.com/ghcr/team/app"},
		{"localhost/dev", "localhost", "dev", "localhost/dev/team/app"},
	} {
		im := &importer{}
		if err := im.destination("http://127.0.0.1:5000", c.into, "", "", http.DefaultTransport); err != nil {
			t.Fatalf("--into %q: %v", c.into, err)
		}
		if im.dstReg.Name() != c.host || im.dstPrefix != c.prefix || im.dstRepo("team/app").String() != c.repo {
			t.Errorf("--into %q: host %q, namespace %q, repository %s; want %q, %q, %s",
				c.into, im.dstReg.Name(), im.dstPrefix, im.dstRepo("team/app"), c.host, c.prefix, c.repo)
		}
	}
	for _, bad := range []struct{ to, into string }{
		{"127.0.0.1:5000", ""}, {"ftp://x", ""}, {"http://127.0.0.1:5000/v2", ""}, {"http://127.0.0.1:5000", "Upper/Case"},
	} {
		if err := (&importer{}).destination(bad.to, bad.into, "", "", http.DefaultTransport); err == nil {
			t.Errorf("--to %q --into %q accepted", bad.to, bad.into)
		}
	}

	var seen []string
	rec := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen = append(seen, r.URL.String()+" Host="+r.Host)
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	})
	dst := &endpoint{host: "dev.registry.example.com", scheme: "https", addr: "10.0.0.5:5000", inner: rec}
	src := &endpoint{host: "nexus.example.com", scheme: "https", addr: "nexus.example.com", prefix: "/repository/docker-hosted", inner: rec}
	for _, c := range []struct {
		ep  *endpoint
		url string
	}{
		{dst, "http://dev.registry.example.com/v2/team/app/manifests/1.0"},
		{dst, "http://dev.registry.example.com/token?scope=x"},
		{dst, "https://auth.example.com/token"},
		{src, "https://nexus.example.com/v2/_catalog?n=100"},
		{src, "https://nexus.example.com/repository/docker-hosted/v2/_catalog?last=a"},
	} {
		req, _ := http.NewRequest("GET", c.url, nil)
		c.ep.RoundTrip(req)
	}
	want := []string{
		"https://10.0.0.5:5000/v2/team/app/manifests/1.0 Host=dev.registry.example.com",
		"https://10.0.0.5:5000/token?scope=x Host=dev.registry.example.com",
		"https://auth.example.com/token Host=auth.example.com", // another host: untouched
		"https://nexus.example.com/repository/docker-hosted/v2/_catalog?n=100 Host=nexus.example.com",
		"https://nexus.example.com/repository/docker-hosted/v2/_catalog?last=a Host=nexus.example.com",
	}
	if !slices.Equal(seen, want) {
		t.Errorf("requests sent:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
