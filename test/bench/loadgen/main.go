// Command loadgen is the client half of `make bench` (test/bench/run.sh): it pushes the
// benchmark's content to a registry, times concurrent large-blob downloads and times
// blob pushes. It speaks the OCI distribution API over plain HTTP and uses only the
// standard library, so the same code drives dockyard and the reference registry.
//
// Subcommands (each prints KEY=VALUE lines on stdout for the driver script):
//
//	loadgen freeport
//	loadgen setup -addr HOST:PORT -repo NAME [-big FILE] [-auth 'Bearer TOKEN']
//	loadgen pull  -addr HOST:PORT -repo NAME -digest D -size N -n 8 [-verify] [-key PULL]
//	loadgen push  -addr HOST:PORT -repo NAME -file FILE -reps 3 -chunks 4
//	loadgen proxy-setup -addr HOST:PORT -repo NAME -mib 256 -count 4
//	loadgen ttfb  -targets up=HOST:PORT,dy=HOST:PORT -repo NAME -digests D1,D2 -size N
//	loadgen es256 [-seconds 1]
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const manifestType = "application/vnd.oci.image.manifest.v1+json"

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: loadgen freeport|setup|pull|push|pushn|proxy-setup|ttfb|es256 [flags]")
	}
	var err error
	switch os.Args[1] {
	case "freeport":
		err = freeport()
	case "setup":
		err = setup(os.Args[2:])
	case "pull":
		err = pull(os.Args[2:])
	case "push":
		err = push(os.Args[2:])
	case "pushn":
		err = pushN(os.Args[2:])
	case "proxy-setup":
		err = proxySetup(os.Args[2:])
	case "ttfb":
		err = ttfb(os.Args[2:])
	case "es256":
		err = es256(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fatalf("loadgen %s: %v", os.Args[1], err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func freeport() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}

// client is a keep-alive HTTP client with large socket buffers, so that the client's
// per-byte cost is small and the same for every registry.
func client(conns int) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Minute,
		Transport: &http.Transport{
			Proxy:               nil,
			DisableCompression:  true,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			WriteBufferSize:     256 << 10,
			ReadBufferSize:      64 << 10,
		},
		// GETs follow a registry's redirect to its storage (S3 with redirect: true);
		// nothing else is redirected.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.Method == http.MethodGet && len(via) < 3 {
				return nil
			}
			return http.ErrUseLastResponse
		},
	}
}

type registry struct {
	base *url.URL // http://host:port
	repo string
	hc   *http.Client
	auth string // Authorization header of every request (setup), or empty
}

func newRegistry(addr, repo string, conns int) (*registry, error) {
	u, err := url.Parse("http://" + addr)
	if err != nil {
		return nil, err
	}
	return &registry{base: u, repo: repo, hc: client(conns)}, nil
}

func (r *registry) url(path string) string {
	return r.base.String() + "/v2/" + r.repo + path
}

// do sends one request, drains and closes the response body, and checks the status.
func (r *registry) do(method, rawURL string, body io.Reader, size int64, hdr map[string]string, want ...int) (*http.Response, error) {
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	if r.auth != "" {
		req.Header.Set("Authorization", r.auth)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	return resp, fmt.Errorf("%s %s: status %d, want %v: %s", method, rawURL, resp.StatusCode, want, bytes.TrimSpace(msg))
}

// location resolves a response's Location header (relative or absolute) and returns
// it with extra query parameters added.
func (r *registry) location(resp *http.Response, extra url.Values) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", errors.New("response has no Location header")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", err
	}
	u = r.base.ResolveReference(u)
	if len(extra) > 0 {
		q := u.Query()
		for k, vs := range extra {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// pushBlob uploads a blob with POST then a single PUT ?digest= carrying the body.
func (r *registry) pushBlob(d string, body io.Reader, size int64) error {
	resp, err := r.do("POST", r.url("/blobs/uploads/"), nil, 0, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc, err := r.location(resp, url.Values{"digest": {d}})
	if err != nil {
		return err
	}
	_, err = r.do("PUT", loc, body, size, nil, http.StatusCreated)
	return err
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// setup pushes a small image (2 KiB layer, tiny config, manifest tagged "latest") and
// the big blob from a file (when -big is given), then checks that the registry serves
// them. With -auth every request carries that Authorization header.
func setup(args []string) error {
	fs := flag.NewFlagSet("setup", flag.ExitOnError)
	addr := fs.String("addr", "", "registry host:port")
	repo := fs.String("repo", "bench/app", "repository")
	big := fs.String("big", "", "file holding the big blob (none when empty)")
	bigDigest := fs.String("big-digest", "", "digest of -big (computed when empty)")
	authz := fs.String("auth", "", "Authorization header for every request, e.g. 'Bearer TOKEN'")
	fs.Parse(args)
	r, err := newRegistry(*addr, *repo, 4)
	if err != nil {
		return err
	}
	r.auth = *authz

	layer := make([]byte, 2048)
	rand.Read(layer)
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + digestOf(layer) + `"]}}`)
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	manifest, _ := json.Marshal(struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, manifestType,
		desc{"application/vnd.oci.image.config.v1+json", digestOf(config), len(config)},
		[]desc{{"application/vnd.oci.image.layer.v1.tar+gzip", digestOf(layer), len(layer)}}})

	for _, b := range [][]byte{layer, config} {
		if err := r.pushBlob(digestOf(b), bytes.NewReader(b), int64(len(b))); err != nil {
			return err
		}
	}
	if _, err := r.do("PUT", r.url("/manifests/latest"), bytes.NewReader(manifest), int64(len(manifest)),
		map[string]string{"Content-Type": manifestType}, http.StatusCreated); err != nil {
		return err
	}
	if err := r.check(r.url("/manifests/latest"), manifestType, manifest); err != nil {
		return err
	}
	fmt.Printf("MANIFEST_URL=%s\n", r.url("/manifests/latest"))
	fmt.Printf("MANIFEST_DIGEST=%s\n", digestOf(manifest))
	if *big == "" {
		return nil
	}

	f, err := os.Open(*big)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if *bigDigest == "" {
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		*bigDigest = "sha256:" + hex.EncodeToString(h.Sum(nil))
		f.Seek(0, io.SeekStart)
	}
	if err := r.pushBlob(*bigDigest, f, st.Size()); err != nil {
		return err
	}

	// Check what the benchmark will ask for.
	if err := r.check(r.url("/blobs/"+digestOf(layer)), "", layer); err != nil {
		return err
	}
	resp, err := r.do("HEAD", r.url("/blobs/"+*bigDigest), nil, 0, nil, http.StatusOK)
	if err != nil {
		return err
	}
	if resp.ContentLength != st.Size() {
		return fmt.Errorf("HEAD big blob: Content-Length %d, want %d", resp.ContentLength, st.Size())
	}
	fmt.Printf("SMALL_URL=%s\n", r.url("/blobs/"+digestOf(layer)))
	fmt.Printf("BIG_DIGEST=%s\n", *bigDigest)
	fmt.Printf("BIG_SIZE=%d\n", st.Size())
	return nil
}

func (r *registry) check(rawURL, accept string, want []byte) error {
	req, _ := http.NewRequest("GET", rawURL, nil)
	if r.auth != "" {
		req.Header.Set("Authorization", r.auth)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
		return fmt.Errorf("GET %s: status %d, %d bytes, want 200 and the %d pushed bytes", rawURL, resp.StatusCode, len(got), len(want))
	}
	return nil
}

// pull times n concurrent GETs of one blob, from the first request to the last byte.
// With -verify every client hashes what it receives and fails unless it is the blob.
func pull(args []string) error {
	fs := flag.NewFlagSet("pull", flag.ExitOnError)
	addr := fs.String("addr", "", "registry host:port")
	repo := fs.String("repo", "bench/app", "repository")
	d := fs.String("digest", "", "blob digest")
	size := fs.Int64("size", 0, "expected blob size")
	n := fs.Int("n", 8, "concurrent downloads")
	verify := fs.Bool("verify", false, "check every client's bytes against -digest (sha256)")
	key := fs.String("key", "PULL", "prefix of the printed keys")
	fs.Parse(args)
	r, err := newRegistry(*addr, *repo, *n)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, *n)
	ttfbs := make([]time.Duration, *n)
	start := time.Now()
	for i := range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := r.get(ctx, *d, *size, *verify, start)
			if err != nil {
				errs[i] = err
				return
			}
			ttfbs[i] = res.firstByte
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if err := joinSame(errs); err != nil {
		return err
	}
	slices.Sort(ttfbs)
	fmt.Printf("%s_SECONDS=%.3f\n", *key, el)
	fmt.Printf("%s_GBPS=%.3f\n", *key, float64(*size)*float64(*n)/el/1e9)
	fmt.Printf("%s_TTFB_MAX_MS=%.1f\n", *key, ttfbs[len(ttfbs)-1].Seconds()*1000)
	if *verify {
		fmt.Printf("%s_VERIFIED=%d\n", *key, *n)
	}
	return nil
}

// joinSame reports the clients' errors, each different message once with the clients
// that got it.
func joinSame(errs []error) error {
	var msgs []string
	who := map[string][]string{}
	for i, err := range errs {
		if err == nil {
			continue
		}
		m := err.Error()
		if who[m] == nil {
			msgs = append(msgs, m)
		}
		who[m] = append(who[m], strconv.Itoa(i+1))
	}
	if len(msgs) == 0 {
		return nil
	}
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("clients %s of %d: %s", strings.Join(who[m], ","), len(errs), m))
	}
	return errors.New(strings.Join(out, "\n"))
}

// getResult is the timing of one blob GET, measured from a common start.
type getResult struct {
	header    time.Duration // response headers received
	firstByte time.Duration // first body byte received
	allButOne time.Duration // all but the last byte received
	done      time.Duration // last body byte received
}

// get downloads blob d, checks its size (and with verify its sha256 digest) and
// reports when the headers, the first and the last byte arrived.
func (r *registry) get(ctx context.Context, d string, size int64, verify bool, start time.Time) (getResult, error) {
	var res getResult
	req, _ := http.NewRequestWithContext(ctx, "GET", r.url("/blobs/"+d), nil)
	resp, err := r.hc.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	res.header = time.Since(start)
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return res, fmt.Errorf("GET blob: status %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	var h hash.Hash
	if verify {
		h = sha256.New()
	}
	buf := make([]byte, 256<<10)
	var got int64
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			if got == 0 {
				res.firstByte = time.Since(start)
			}
			if got < size-1 && got+int64(k) >= size-1 {
				res.allButOne = time.Since(start)
			}
			got += int64(k)
			if h != nil {
				h.Write(buf[:k])
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("GET blob: after %d of %d bytes: %w", got, size, err)
		}
	}
	res.done = time.Since(start)
	if got != size {
		return res, fmt.Errorf("GET blob: %d bytes, want %d", got, size)
	}
	if h != nil {
		if sum := "sha256:" + hex.EncodeToString(h.Sum(nil)); sum != d {
			return res, fmt.Errorf("GET blob: the %d bytes hash to %s, want %s", got, sum, d)
		}
	}
	if cl := resp.ContentLength; cl >= 0 && cl != size {
		return res, fmt.Errorf("GET blob: Content-Length %d, want %d", cl, size)
	}
	return res, nil
}

// variant is the push file with its first 8 bytes replaced by a counter, so that each
// timed push uploads content the registry has never seen (no deduplication shortcut)
// without writing more files.
type variant struct {
	f      *os.File
	size   int64
	prefix [8]byte
	digest string
}

// variants makes n distinct blobs of f's size: f with its first 8 bytes replaced by
// the variant's number and tag (the same ones every run), with their digests.
func variants(f *os.File, n int, tag uint64) ([]*variant, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	vs := make([]*variant, n)
	for i := range vs {
		v := &variant{f: f, size: st.Size()}
		binary.BigEndian.PutUint64(v.prefix[:], uint64(i+1)<<32|tag)
		h := sha256.New()
		if _, err := io.Copy(h, v.section(0, v.size)); err != nil {
			return nil, err
		}
		v.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
		vs[i] = v
	}
	return vs, nil
}

// section returns bytes [off, off+n) of the variant as a stream.
func (v *variant) section(off, n int64) io.Reader {
	var rs []io.Reader
	if off < 8 {
		p := min(8-off, n)
		rs = append(rs, bytes.NewReader(v.prefix[off:off+p]))
		off, n = off+p, n-p
	}
	if n > 0 {
		rs = append(rs, io.NewSectionReader(v.f, off, n))
	}
	return io.MultiReader(rs...)
}

// pushN pushes n distinct variants of a file at once (monolithic POST+PUT each) and
// prints the seconds until the last 201.
func pushN(args []string) error {
	fs := flag.NewFlagSet("pushn", flag.ExitOnError)
	addr := fs.String("addr", "", "registry host:port")
	repo := fs.String("repo", "bench/pushn", "repository")
	file := fs.String("file", "", "blob content")
	n := fs.Int("n", 16, "concurrent pushes")
	fs.Parse(args)
	r, err := newRegistry(*addr, *repo, *n)
	if err != nil {
		return err
	}
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	vs, err := variants(f, *n, 0xbeef)
	if err != nil {
		return err
	}
	errs := make([]error, *n)
	var wg sync.WaitGroup
	start := time.Now()
	for i, v := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.pushBlob(v.digest, v.section(0, v.size), v.size)
		}()
	}
	wg.Wait()
	if err := joinSame(errs); err != nil {
		return err
	}
	fmt.Printf("PUSHN_SECONDS=%.3f\n", time.Since(start).Seconds())
	for _, v := range vs {
		r.do("DELETE", r.url("/blobs/"+v.digest), nil, 0, nil, http.StatusAccepted)
	}
	return nil
}

// push times blob uploads in three ways, reps times each, and prints the medians.
func push(args []string) error {
	fs := flag.NewFlagSet("push", flag.ExitOnError)
	addr := fs.String("addr", "", "registry host:port")
	repo := fs.String("repo", "bench/push", "repository")
	file := fs.String("file", "", "blob content")
	reps := fs.Int("reps", 3, "repetitions per mode")
	chunks := fs.Int("chunks", 4, "PATCH requests in chunked mode")
	fs.Parse(args)
	r, err := newRegistry(*addr, *repo, 2)
	if err != nil {
		return err
	}
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	modes := []string{"post_put", "post_digest", "chunked"}
	// Content and digests do not depend on the registry: each run of the bench makes
	// the same variants for both registries.
	vs, err := variants(f, len(modes)**reps, 0xdeca)
	if err != nil {
		return err
	}
	for mi, mode := range modes {
		var times []float64
		unsupported := false
		for rep := range *reps {
			v := vs[mi**reps+rep]
			t, err := r.pushOnce(mode, v, *chunks)
			if errors.Is(err, errUnsupported) {
				unsupported = true
				break
			}
			if err != nil {
				return fmt.Errorf("%s push %d: %w", mode, rep+1, err)
			}
			times = append(times, t)
			// Confirm the blob landed, then remove it (untimed) to keep disk use flat.
			resp, err := r.do("HEAD", r.url("/blobs/"+v.digest), nil, 0, nil, http.StatusOK)
			if err != nil {
				return fmt.Errorf("%s push %d: %w", mode, rep+1, err)
			}
			if resp.ContentLength != v.size {
				return fmt.Errorf("%s push %d: HEAD says %d bytes, want %d", mode, rep+1, resp.ContentLength, v.size)
			}
			r.do("DELETE", r.url("/blobs/"+v.digest), nil, 0, nil, http.StatusAccepted)
		}
		key := "PUSH_" + map[string]string{"post_put": "MONO", "post_digest": "POSTDIGEST", "chunked": "CHUNKED"}[mode]
		if unsupported {
			fmt.Printf("%s=n/a\n", key)
			continue
		}
		fmt.Printf("%s_ALL=%s\n", key, fmtTimes(times))
		sort.Float64s(times)
		fmt.Printf("%s=%.3f\n", key, times[len(times)/2])
	}
	return nil
}

var errUnsupported = errors.New("unsupported by this registry")

func fmtTimes(ts []float64) string {
	s := ""
	for i, t := range ts {
		if i > 0 {
			s += ","
		}
		s += strconv.FormatFloat(t, 'f', 3, 64)
	}
	return s
}

// pushOnce uploads one variant and returns the seconds from the first request to the
// 201 Created.
func (r *registry) pushOnce(mode string, v *variant, chunks int) (float64, error) {
	start := time.Now()
	switch mode {
	case "post_put":
		if err := r.pushBlob(v.digest, v.section(0, v.size), v.size); err != nil {
			return 0, err
		}
	case "post_digest":
		resp, err := r.do("POST", r.url("/blobs/uploads/?digest="+url.QueryEscape(v.digest)), v.section(0, v.size), v.size, nil,
			http.StatusCreated, http.StatusAccepted)
		if err != nil {
			return 0, err
		}
		if resp.StatusCode == http.StatusAccepted {
			// The registry ignored ?digest= and opened a session: cancel it.
			if loc, err := r.location(resp, nil); err == nil {
				r.do("DELETE", loc, nil, 0, nil, http.StatusNoContent, http.StatusNotFound)
			}
			return 0, errUnsupported
		}
	case "chunked":
		resp, err := r.do("POST", r.url("/blobs/uploads/"), nil, 0, nil, http.StatusAccepted)
		if err != nil {
			return 0, err
		}
		step := (v.size + int64(chunks) - 1) / int64(chunks)
		for off := int64(0); off < v.size; off += step {
			n := min(step, v.size-off)
			loc, err := r.location(resp, nil)
			if err != nil {
				return 0, err
			}
			resp, err = r.do("PATCH", loc, v.section(off, n), n,
				map[string]string{"Content-Range": fmt.Sprintf("%d-%d", off, off+n-1)}, http.StatusAccepted)
			if err != nil {
				return 0, err
			}
		}
		loc, err := r.location(resp, url.Values{"digest": {v.digest}})
		if err != nil {
			return 0, err
		}
		if _, err := r.do("PUT", loc, nil, 0, nil, http.StatusCreated); err != nil {
			return 0, err
		}
	default:
		return 0, fmt.Errorf("unknown mode %q", mode)
	}
	return time.Since(start).Seconds(), nil
}

// proxySetup pushes count blobs of mib MiB to a registry (the upstream of the proxy
// benchmarks) and prints their digests as PROXY_DIGEST_1..count. The blobs are one
// pseudo-random buffer with a different first 8 bytes each, so every measurement can
// ask for content that no cache has seen. A per-run seed keeps them apart between runs.
func proxySetup(args []string) error {
	fs := flag.NewFlagSet("proxy-setup", flag.ExitOnError)
	addr := fs.String("addr", "", "registry host:port")
	repo := fs.String("repo", "bench/proxy", "repository")
	mib := fs.Int("mib", 256, "size of each blob in MiB")
	count := fs.Int("count", 4, "number of blobs")
	fs.Parse(args)
	r, err := newRegistry(*addr, *repo, 2)
	if err != nil {
		return err
	}
	var seed [32]byte
	rand.Read(seed[:])
	base := make([]byte, *mib<<20)
	mrand.NewChaCha8(seed).Read(base)
	fmt.Printf("PROXY_SIZE=%d\n", len(base))
	for i := range *count {
		binary.BigEndian.PutUint64(base[:8], uint64(i+1)<<32|0xb10b)
		d := digestOf(base)
		if err := r.pushBlob(d, bytes.NewReader(base), int64(len(base))); err != nil {
			return fmt.Errorf("blob %d: %w", i+1, err)
		}
		resp, err := r.do("HEAD", r.url("/blobs/"+d), nil, 0, nil, http.StatusOK)
		if err != nil {
			return fmt.Errorf("blob %d: %w", i+1, err)
		}
		if resp.ContentLength != int64(len(base)) {
			return fmt.Errorf("blob %d: HEAD says %d bytes, want %d", i+1, resp.ContentLength, len(base))
		}
		fmt.Printf("PROXY_DIGEST_%d=%s\n", i+1, d)
	}
	return nil
}

// ttfb measures, for each digest in turn, one cold GET through every target: the time
// to the first body byte and to the last, verifying the content. The order of the
// targets rotates from one digest to the next, and dirty pages are flushed (sync)
// before each GET so that no GET pays for the writeback of the one before. It prints
// per target NAME (upper case) TTFB_NAME_MS and FULL_NAME_S (medians) and the single
// runs, and TAIL_NAME_MS: how long the last byte came after all the others.
func ttfb(args []string) error {
	fs := flag.NewFlagSet("ttfb", flag.ExitOnError)
	targets := fs.String("targets", "", "NAME=HOST:PORT,...")
	repo := fs.String("repo", "bench/proxy", "repository")
	digests := fs.String("digests", "", "D1,D2,...: one cold blob per run")
	size := fs.Int64("size", 0, "expected blob size")
	fs.Parse(args)
	type target struct {
		name  string
		r     *registry
		ttfb  []float64 // ms
		hdr   []float64 // ms
		tail  []float64 // ms
		total []float64 // s
	}
	var ts []*target
	for _, t := range strings.Split(*targets, ",") {
		name, addr, ok := strings.Cut(t, "=")
		if !ok {
			return fmt.Errorf("bad target %q, want NAME=HOST:PORT", t)
		}
		r, err := newRegistry(addr, *repo, 1)
		if err != nil {
			return err
		}
		ts = append(ts, &target{name: strings.ToUpper(name), r: r})
	}
	ds := strings.Split(*digests, ",")
	for run, d := range ds {
		for k := range ts {
			t := ts[(run+k)%len(ts)]
			syscall.Sync()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			res, err := t.r.get(ctx, d, *size, true, time.Now())
			cancel()
			if err != nil {
				return fmt.Errorf("%s, run %d (%s): %w", t.name, run+1, d, err)
			}
			t.ttfb = append(t.ttfb, res.firstByte.Seconds()*1000)
			t.hdr = append(t.hdr, res.header.Seconds()*1000)
			t.tail = append(t.tail, (res.done-res.allButOne).Seconds()*1000)
			t.total = append(t.total, res.done.Seconds())
		}
	}
	median := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	join := func(xs []float64, prec int) string {
		var ss []string
		for _, x := range xs {
			ss = append(ss, strconv.FormatFloat(x, 'f', prec, 64))
		}
		return strings.Join(ss, ",")
	}
	for _, t := range ts {
		fmt.Printf("TTFB_%s_MS=%.1f\n", t.name, median(t.ttfb))
		fmt.Printf("TTFB_%s_MS_ALL=%s\n", t.name, join(t.ttfb, 1))
		fmt.Printf("HDR_%s_MS=%.1f\n", t.name, median(t.hdr))
		fmt.Printf("TAIL_%s_MS=%.1f\n", t.name, median(t.tail))
		fmt.Printf("FULL_%s_S=%.3f\n", t.name, median(t.total))
		fmt.Printf("FULL_%s_S_ALL=%s\n", t.name, join(t.total, 3))
	}
	return nil
}

// es256 times ECDSA P-256 signature verification (what checking an ES256 JWT costs) on
// one goroutine, to compare with the CPU a token-authenticated request costs.
func es256(args []string) error {
	fs := flag.NewFlagSet("es256", flag.ExitOnError)
	secs := fs.Float64("seconds", 1, "how long to verify")
	fs.Parse(args)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	h := sha256.Sum256([]byte("header.claims"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, h[:])
	if err != nil {
		return err
	}
	ecdsa.VerifyASN1(&k.PublicKey, h[:], sig) // warm-up
	n, start := 0, time.Now()
	for time.Since(start).Seconds() < *secs {
		if !ecdsa.VerifyASN1(&k.PublicKey, h[:], sig) {
			return errors.New("signature does not verify")
		}
		n++
	}
	fmt.Printf("ES256_VERIFY_US=%.1f\n", time.Since(start).Seconds()*1e6/float64(n))
	return nil
}
