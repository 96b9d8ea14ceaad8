package config

import (
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A duration in days is exactly that many days, never one that wrapped around; any
// other form reads as Go's time.ParseDuration reads it.
func FuzzParseDuration(f *testing.F) {
	// 106752d and up wrapped around to negative durations (regression).
	for _, s := range []string{"30d", "0d", "-1d", "+2d", "1h30m", "-5m", "d", "1.5d", "106751d", "106752d", "9223372036854775807d", ""} {
		f.Add(s)
	}
	day := big.NewInt(int64(24 * time.Hour))
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		days, isDays := strings.CutSuffix(s, "d")
		if !isDays {
			want, werr := time.ParseDuration(s)
			if (err == nil) != (werr == nil) || d != want {
				t.Fatalf("ParseDuration(%q) = %v, %v; time.ParseDuration says %v, %v", s, d, err, want, werr)
			}
			return
		}
		if err != nil {
			return
		}
		n, ok := new(big.Int).SetString(strings.TrimPrefix(days, "+"), 10)
		if !ok || n.Sign() < 0 || new(big.Int).Mul(n, day).Cmp(big.NewInt(int64(d))) != 0 {
			t.Fatalf("ParseDuration(%q) = %v, which is not %s days", s, d, days)
		}
	})
}

// A configuration file either loads, with no negative duration or size anywhere in it
// and the same result every time, or fails with an *Error listing its problems, one
// per line; it never panics. The examples in configs/ are the seeds.
func FuzzLoad(f *testing.F) {
	examples, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(examples) == 0 {
		f.Fatalf("examples: %v %v", examples, err)
	}
	dir := f.TempDir()
	others, _ := filepath.Glob("../configs/*")
	for _, p := range others {
		// The files the examples name (users, webhook secrets) sit next to them.
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o600); err != nil {
			f.Fatal(err)
		}
	}
	for _, p := range examples {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	for _, s := range []string{
		"", "listen: ':5000'\n", "http:\n  read_timeout: -1s\n", "http:\n  max_manifest_size: 9EiB\n",
		"registries:\n- {name: hub, type: proxy, upstream: {url: 'https://r.example', tag_ttl: 200000d}}\nroutes:\n- {host: '*', registry: hub}\n",
		"auth:\n  mode: token\n  users_file: users.htpasswd\n  token: {ttl: -5m}\n", // regression: loaded
		"registries: 5\n", "a: &a [*a]\n", "lifecycle: {retention: [{registries: [default], repositories: ['**'], pulled_within: -1d}]}\n",
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(dir, "fuzz.yaml")
	f.Fuzz(func(t *testing.T, yaml []byte) {
		if err := os.WriteFile(path, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				return // the file could not be read as YAML: reported as such
			}
			if len(ce.Problems) == 0 {
				t.Fatalf("an error without problems: %v", err)
			}
			for _, p := range ce.Problems {
				if strings.TrimSpace(p) == "" || strings.Contains(p, "\n") {
					t.Fatalf("problem %q in %v", p, err)
				}
			}
			return
		}
		if where := negative(reflect.ValueOf(*c), ""); where != "" {
			t.Fatalf("loaded with %s negative", where)
		}
		again, err := Load(path)
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("loaded again: %v\n%+v\nfirst:\n%+v", err, again, c)
		}
	})
}

var durationKind, byteSizeKind = reflect.TypeOf(time.Duration(0)), reflect.TypeOf(ByteSize(0))

// negative names the first duration or size below zero in v (by its key path), or "".
func negative(v reflect.Value, path string) string {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			return negative(v.Elem(), path)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			key, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("mapstructure"), ",")
			p := key
			if path != "" && key != "" {
				p = path + "." + key
			} else if key == "" {
				p = path
			}
			if w := negative(v.Field(i), p); w != "" {
				return w
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			if w := negative(v.Index(i), path+"["+big.NewInt(int64(i)).String()+"]"); w != "" {
				return w
			}
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			if w := negative(v.MapIndex(k), path+"."+k.String()); w != "" {
				return w
			}
		}
	case reflect.Int64:
		if (v.Type() == durationKind || v.Type() == byteSizeKind) && v.Int() < 0 {
			return path
		}
	}
	return ""
}
